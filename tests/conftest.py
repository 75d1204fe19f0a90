import pytest

from tests.tiny_assets import make_assets


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    return make_assets(tmp_path_factory.mktemp("tiny"))
