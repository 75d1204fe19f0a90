"""What an installed package gives: the wheel (a normal, non-editable install) holds every module and the .pth that
makes ``egg.zoo.discritune`` importable; importing it sets torch's allocator up."""

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_contains_every_module_and_the_alias_pth(tmp_path):
    # Built from a fresh copy: a stale build/ folder in the checkout must not hide a missing package.
    source = tmp_path / "src"
    shutil.copytree(ROOT / "egg_zoo_discritune", source / "egg_zoo_discritune",
                    ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("setup.py", "pyproject.toml", "egg_zoo_discritune.pth"):
        shutil.copy(ROOT / name, source / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index",
                    "-w", str(tmp_path), str(source)], check=True, capture_output=True, timeout=300)
    (wheel,) = tmp_path.glob("*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    sources = {p.relative_to(ROOT).as_posix() for p in (ROOT / "egg_zoo_discritune").rglob("*.py")}
    assert sources <= names, sorted(sources - names)
    assert "egg_zoo_discritune.pth" in names


@pytest.mark.parametrize("setting, expected", [(None, "1"), ("0", "0")])
def test_importing_the_package_turns_on_huge_pages_for_torchs_allocator_unless_told_otherwise(setting, expected):
    env = {k: v for k, v in os.environ.items() if k != "THP_MEM_ALLOC_ENABLE"}
    if setting is not None:
        env["THP_MEM_ALLOC_ENABLE"] = setting
    code = "import os, egg_zoo_discritune, torch; torch.ones(2**20); print(os.environ['THP_MEM_ALLOC_ENABLE'])"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert done.stdout.strip() == expected
