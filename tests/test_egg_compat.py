"""``egg_compat`` routes to egg.core when it is importable, and ``python -m egg.zoo.discritune.train``
runs without EGG, with EGG installed normally, and with EGG installed editable from its own folder."""

import os
import site
import subprocess
import sys
import venv

import pytest
import torch

from egg_zoo_discritune.egg_compat import load_engine
from tests.egg_standin import write_egg_project


def test_builtin_engine_without_egg():
    if load_engine("auto").name == "egg":
        pytest.skip("EGG is installed in this environment")
    assert load_engine("builtin").name == "builtin"
    with pytest.raises(ImportError, match="install EGG"):
        load_engine("egg")


def test_routes_to_egg_core_when_importable(standin_on_path):
    engine = load_engine("auto")
    import egg.core

    assert engine.name == "egg" and engine.module is egg.core
    assert engine.Trainer is egg.core.Trainer
    assert load_engine("builtin").name == "builtin"


def test_resume_under_egg_engine(tiny, tmp_path, standin_on_path, monkeypatch):
    from egg_zoo_discritune.engine.checkpoint import load_checkpoint
    from egg_zoo_discritune.train import main

    monkeypatch.setenv("EGG_STANDIN_MARKER", str(tmp_path / "marker.txt"))
    extra = ["--engine", "egg", "--train_decoding", "sample", "--validation_freq", "0"]
    straight = main([*_train_argv(tiny, tmp_path / "straight"), *extra, "--n_epochs", "2"])
    main([*_train_argv(tiny, tmp_path / "resumed"), *extra])
    resumed = main([*_train_argv(tiny, tmp_path / "resumed"), *extra, "--n_epochs", "2", "--resume"])
    a, b = load_checkpoint(straight / "final.tar"), load_checkpoint(resumed / "final.tar")
    assert a["epoch"] == b["epoch"] == 2
    assert all(torch.equal(v, b["model_state_dict"][k]) for k, v in a["model_state_dict"].items())
    assert (tmp_path / "marker.txt").read_text().count("egg.core.Trainer") == 3


def _train_argv(tiny, run_dir):
    return ["--gpt2", str(tiny.gpt2), "--clipcap_weights", str(tiny.clipcap_weights), "--receiver", str(tiny.clip),
            "--dataset", "coco", "--annotations", str(tiny.coco_json), "--batch_size", "4", "--n_epochs", "1",
            "--num_workers", "0", "--max_len", "6", "--checkpoint_dir", str(run_dir)]


def _run_module(python, argv, marker, cwd):
    env = {**os.environ, "EGG_STANDIN_MARKER": str(marker), "PYTHONPATH": ""}
    return subprocess.run([str(python), "-m", "egg.zoo.discritune.train", *argv], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def _venv_seeing_this_one(path):
    """A fresh venv whose site-packages also processes this environment's (and so its .pth files)."""
    venv.create(path, with_pip=False)
    python = path / "bin" / "python"
    target = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                            capture_output=True, text=True, check=True).stdout.strip()
    outer = site.getsitepackages()[0]
    with open(os.path.join(target, "zz_outer_env.pth"), "w") as f:
        f.write(f"import site; site.addsitedir({outer!r})\n")
    return python


def _pip_install(python, *args):
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-index",
                    *args], check=True, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("egg_install", ["none", "site-packages", "editable"])
def test_python_m_egg_zoo_discritune_train(tiny, tmp_path, egg_install):
    python = sys.executable
    if egg_install != "none":
        python = _venv_seeing_this_one(tmp_path / "venv")
        project = write_egg_project(tmp_path / "EGG")
        _pip_install(python, *(["-e"] if egg_install == "editable" else []), str(project))
    marker = tmp_path / "marker.txt"
    result = _run_module(python, _train_argv(tiny, tmp_path / "run"), marker, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "run" / "final.tar").is_file()
    expected = "builtin" if egg_install == "none" else "egg"
    assert f"engine: {expected}" in result.stderr
    assert marker.exists() == (egg_install != "none")
    if egg_install != "none":
        where = subprocess.run([str(python), "-c", "import egg.core; print(egg.core.__file__)"],
                               capture_output=True, text=True, check=True).stdout
        assert str(tmp_path / ("EGG" if egg_install == "editable" else "venv")) in where


def test_help_via_python_m(tmp_path):
    result = subprocess.run([sys.executable, "-m", "egg.zoo.discritune.train", "--help"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "--clipcap_weights" in result.stdout
