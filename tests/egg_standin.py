"""An EGG-shaped project written by the tests: ``setup.py``, plain ``egg/__init__.py`` and
``egg/zoo/__init__.py`` (regular packages, as EGG's), and ``egg/core`` with EGG's public API and its
global options (``init`` / ``get_opts``). Its Trainer appends a line to ``$EGG_STANDIN_MARKER``, so a
test can tell that the real-EGG route was taken."""

from __future__ import annotations

from pathlib import Path

CORE = '''
import argparse
import os

from egg_zoo_discritune.engine import trainer as _builtin
from egg_zoo_discritune.engine.callbacks import Callback, ConsoleLogger, ProgressBarLogger
from egg_zoo_discritune.engine.interaction import Interaction, LoggingStrategy

_common_opts = None


def init(arg_parser=None, params=None):
    global _common_opts
    parser = arg_parser or argparse.ArgumentParser()
    parser.add_argument("--validation_freq", type=int, default=1)
    parser.add_argument("--update_freq", type=int, default=1)
    parser.add_argument("--random_seed", type=int, default=None)
    parser.add_argument("--fp16", action="store_true")
    parser.add_argument("--no_cuda", action="store_true")
    _common_opts = parser.parse_args(params)
    return _common_opts


def get_opts():
    return _common_opts


class Trainer(_builtin.Trainer):
    def __init__(self, game, optimizer, train_data, optimizer_scheduler=None, validation_data=None, device=None,
                 callbacks=None, grad_norm=None, aggregate_interaction_logs=True):
        opts = get_opts()
        if os.environ.get("EGG_STANDIN_MARKER"):
            with open(os.environ["EGG_STANDIN_MARKER"], "a") as f:
                f.write("egg.core.Trainer\\n")
        super().__init__(game, optimizer, train_data, optimizer_scheduler, validation_data, device, callbacks,
                         grad_norm, aggregate_interaction_logs, validation_freq=opts.validation_freq,
                         update_freq=opts.update_freq, fp16=opts.fp16)
'''


def write_egg_project(root: Path) -> Path:
    """The project folder (what a ``git clone`` of EGG gives): install it, or put it on the path."""
    (root / "egg" / "zoo").mkdir(parents=True)
    (root / "egg" / "core").mkdir()
    (root / "egg" / "__init__.py").write_text("# EGG-shaped stand-in\n")
    (root / "egg" / "zoo" / "__init__.py").write_text("# EGG-shaped stand-in\n")
    (root / "egg" / "core" / "__init__.py").write_text(CORE)
    (root / "setup.py").write_text(
        "from setuptools import find_packages, setup\n"
        "setup(name='EGG', version='0.1.0', packages=find_packages(include=['egg', 'egg.*']))\n")
    return root
