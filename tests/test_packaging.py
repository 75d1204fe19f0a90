"""The wheel (a normal, non-editable install) holds every module and the .pth that makes
``egg.zoo.discritune`` importable."""

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

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
