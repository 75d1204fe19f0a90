"""``egg_compat`` routes to the real egg.core when it is importable, and ``python -m egg.zoo.discritune.train``
runs without EGG, with EGG installed normally, and with EGG installed editable from its own folder.

The EGG used is facebookresearch's own, from its wheel in ../shared/wheels (what ``make install`` puts into
the venv); tests that need it are skipped, saying so, where it is absent."""

import importlib.util
import json
import logging
import os
import site
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest
import torch

from egg_zoo_discritune.egg_compat import load_engine

EGG_WHEEL = next(iter(sorted((Path(__file__).resolve().parents[2] / "shared" / "wheels").glob("egg-*.whl"))), None)
needs_egg = pytest.mark.skipif(importlib.util.find_spec("egg.core") is None,
                               reason="EGG is not installed (make install installs it from ../shared/wheels)")
needs_wheel = pytest.mark.skipif(EGG_WHEEL is None, reason="no EGG wheel in ../shared/wheels")


@needs_egg
def test_routes_to_the_real_egg_core():
    import egg.core

    engine = load_engine("auto")
    assert engine.name == "egg" and engine.module is egg.core
    assert engine.Trainer is egg.core.Trainer and engine.Trainer.__module__ == "egg.core.trainers"
    assert load_engine("builtin").name == "builtin"


@needs_egg
def test_resume_under_the_egg_trainer(tiny, tmp_path, monkeypatch):
    import egg.core

    from egg_zoo_discritune.engine.checkpoint import load_checkpoint
    from egg_zoo_discritune.train import main

    built = []
    init = egg.core.Trainer.__init__
    monkeypatch.setattr(egg.core.Trainer, "__init__", lambda self, *a, **k: built.append(1) or init(self, *a, **k))
    extra = ["--engine", "egg", "--train_decoding", "sample", "--validation_freq", "0"]
    straight = main([*_train_argv(tiny, tmp_path / "straight"), *extra, "--n_epochs", "2"])
    main([*_train_argv(tiny, tmp_path / "resumed"), *extra])
    resumed = main([*_train_argv(tiny, tmp_path / "resumed"), *extra, "--n_epochs", "2", "--resume"])
    a, b = load_checkpoint(straight / "final.tar"), load_checkpoint(resumed / "final.tar")
    assert a["epoch"] == b["epoch"] == 2
    assert all(torch.equal(v, b["model_state_dict"][k]) for k, v in a["model_state_dict"].items())
    assert len(built) == 3


def _train_argv(tiny, run_dir):
    return ["--gpt2", str(tiny.gpt2), "--clipcap_weights", str(tiny.clipcap_weights), "--receiver", str(tiny.clip),
            "--dataset", "coco", "--annotations", str(tiny.coco_json), "--batch_size", "4", "--n_epochs", "1",
            "--num_workers", "0", "--max_len", "6", "--checkpoint_dir", str(run_dir)]


def _site_without_egg(directory: Path) -> Path:
    """This environment's site-packages, EGG left out: a folder of links to everything else in it."""
    directory.mkdir()
    for entry in Path(site.getsitepackages()[0]).iterdir():
        if entry.name != "egg" and not entry.name.startswith("egg-"):
            (directory / entry.name).symlink_to(entry)
    return directory


def _venv_seeing(path: Path, site_dir: Path) -> Path:
    """A fresh venv whose site-packages also processes ``site_dir`` (and so its .pth files)."""
    venv.create(path, with_pip=False)
    python = path / "bin" / "python"
    target = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                            capture_output=True, text=True, check=True).stdout.strip()
    with open(os.path.join(target, "zz_outer_env.pth"), "w") as f:
        f.write(f"import site; site.addsitedir({str(site_dir)!r})\n")
    return python


def _egg_clone(directory: Path) -> Path:
    """EGG's sources laid out as a clone (``egg/`` and a setup.py finding its packages), from its wheel."""
    with zipfile.ZipFile(EGG_WHEEL) as wheel:
        wheel.extractall(directory, [n for n in wheel.namelist() if n.startswith("egg/")])
    (directory / "setup.py").write_text("from setuptools import find_packages, setup\n\n"
                                        "setup(name='EGG', version='0.1.0', packages=find_packages())\n")
    return directory


def _pip_install(python, *args):
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-index",
                    *args], check=True, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("egg_install", ["none", pytest.param("site-packages", marks=needs_wheel),
                                         pytest.param("editable", marks=needs_wheel)])
def test_python_m_egg_zoo_discritune_train(tiny, tmp_path, egg_install):
    python = _venv_seeing(tmp_path / "venv", _site_without_egg(tmp_path / "site"))
    if egg_install == "site-packages":
        _pip_install(python, str(EGG_WHEEL))
    elif egg_install == "editable":
        _pip_install(python, "-e", str(_egg_clone(tmp_path / "EGG")))
    env = {**os.environ, "PYTHONPATH": ""}
    result = subprocess.run([str(python), "-m", "egg.zoo.discritune.train", *_train_argv(tiny, tmp_path / "run")],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "run" / "final.tar").is_file()
    where = subprocess.run([str(python), "-c", "import egg.core; print(egg.core.__file__)"], cwd=tmp_path, env=env,
                           capture_output=True, text=True)
    if egg_install == "none":
        assert "engine: builtin" in result.stderr and "No module named 'egg.core'" in where.stderr
        refused = subprocess.run([str(python), "-c", "from egg_zoo_discritune.egg_compat import load_engine; "
                                  "load_engine('egg')"], cwd=tmp_path, env=env, capture_output=True, text=True)
        assert "install EGG" in refused.stderr
    else:
        assert "engine: egg" in result.stderr
        assert str(tmp_path / ("EGG" if egg_install == "editable" else "venv")) in where.stdout


def test_help_via_python_m(tmp_path):
    result = subprocess.run([sys.executable, "-m", "egg.zoo.discritune.train", "--help"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "--clipcap_weights" in result.stdout


@pytest.mark.parametrize("engine", ["builtin", pytest.param("egg", marks=needs_egg)])
def test_egg_common_options(tiny, tmp_path, engine, caplog, capsys):
    from egg_zoo_discritune.engine.checkpoint import load_checkpoint
    from egg_zoo_discritune.engine.interaction import load_interactions
    from egg_zoo_discritune.train import main

    caplog.set_level(logging.INFO)
    run = tmp_path / "run"
    argv = [*_train_argv(tiny, run), "--engine", engine, "--checkpoint_freq", "2", "--preemptable"]
    main([*argv, "--n_epochs", "2", "--save_interactions", "--fp16"])
    assert "fp16 needs a CUDA device" in caplog.text
    # The engine's ConsoleLogger: one JSON line per epoch and validation, EGG's format.
    out = capsys.readouterr().out
    printed = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert [(r["mode"], r["epoch"]) for r in printed] == [("train", 1), ("test", 1), ("train", 2), ("test", 2)]
    assert {"loss", "acc", "reward", "length"} <= set(printed[0])
    if engine == "egg":  # EGG's rich progress bar ends with its info table: one row per epoch and phase
        rows = [line.split("│")[1:3] for line in out.splitlines() if line.startswith("│")]
        assert [(phase.strip(), int(epoch)) for phase, epoch in rows] == [(r["mode"], r["epoch"]) for r in printed]
    assert sorted(p.name for p in run.glob("*.tar")) == ["2.tar", "final.tar"]  # every 2nd epoch, and the end
    for epoch in (1, 2):  # EGG's InteractionSaver layout; captions as token ids
        interaction = load_interactions(run / "interactions" / "validation" / f"epoch_{epoch}" / "interaction_gpu0")
        assert interaction.message.dtype == torch.long and interaction.message.shape == (4, 6)
        assert interaction.message_length.shape == (4,) and set(interaction.aux) >= {"acc", "reward"}
    # Rescheduled with the same command and one more epoch, --preemptable continues from the newest checkpoint.
    caplog.clear()
    main([*argv, "--n_epochs", "3"])
    assert "resumed from" in caplog.text and load_checkpoint(run / "final.tar")["epoch"] == 3
    # --load_from_checkpoint starts a new run from another run's checkpoint.
    other = main([*_train_argv(tiny, tmp_path / "other"), "--engine", engine, "--n_epochs", "3",
                  "--load_from_checkpoint", str(run / "2.tar")])
    assert sorted(p.name for p in other.glob("*.tar")) == ["3.tar", "final.tar"]
    with pytest.raises(ValueError, match="--preemptable needs --checkpoint_dir"):
        main([*_train_argv(tiny, tmp_path / "x")[:-2], "--engine", engine, "--preemptable"])


@needs_egg
@pytest.mark.skipif(importlib.util.find_spec("tensorboard") is None, reason="the tensorboard package is not installed")
def test_tensorboard_through_egg_and_refused_without_it(tiny, tmp_path):
    from egg_zoo_discritune.train import main

    main([*_train_argv(tiny, tmp_path / "run"), "--engine", "egg", "--tensorboard", "--tensorboard_dir",
          str(tmp_path / "tb")])
    assert list((tmp_path / "tb").glob("events.out.tfevents.*"))
    with pytest.raises(ValueError, match="--tensorboard is EGG's TensorboardLogger"):
        main([*_train_argv(tiny, tmp_path / "builtin"), "--engine", "builtin", "--tensorboard"])
