import sys

import pytest

from tests.egg_standin import write_egg_project
from tests.tiny_assets import make_assets


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    return make_assets(tmp_path_factory.mktemp("tiny"))


@pytest.fixture
def standin_on_path(tmp_path, monkeypatch):
    project = write_egg_project(tmp_path / "EGG")
    monkeypatch.syspath_prepend(str(project))
    saved = {k: v for k, v in sys.modules.items() if k == "egg" or k.startswith("egg.")}
    for name in saved:
        del sys.modules[name]
    yield project
    for name in [k for k in sys.modules if k == "egg" or k.startswith("egg.")]:
        del sys.modules[name]
    sys.modules.update(saved)
