"""What an installed package gives: the wheel (a normal, non-editable install) holds every module and the .pth that
makes ``egg.zoo.discritune`` importable; importing it sets the C allocator up."""

import ctypes
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


MALLINFO = """
import ctypes, egg_zoo_discritune, torch
class Info(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]
libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = Info
before = libc.mallinfo2().hblks
x = torch.empty(2**25)  # 128 MB: glibc would mmap it by default
during = libc.mallinfo2().hblks
del x
print(during - before, libc.mallinfo2().fordblks >> 20)
"""


@pytest.mark.skipif(not hasattr(ctypes.CDLL(None), "mallinfo2"), reason="needs glibc >= 2.33")
@pytest.mark.parametrize("setting", [None, "0"])
def test_importing_the_package_keeps_freed_memory_in_the_heap_unless_told_otherwise(setting):
    env = {k: v for k, v in os.environ.items() if k != "DISCRITUNE_KEEP_FREED_MEMORY"}
    if setting is not None:
        env["DISCRITUNE_KEEP_FREED_MEMORY"] = setting
    done = subprocess.run([sys.executable, "-c", MALLINFO], capture_output=True, text=True, env=env, check=True)
    new_mmaps, free_in_heap_mb = map(int, done.stdout.split())
    if setting is None:  # from the heap, and kept there once freed
        assert new_mmaps == 0 and free_in_heap_mb >= 128
    else:  # glibc's default: its own mapping, handed back on free
        assert new_mmaps == 1 and free_in_heap_mb < 128
