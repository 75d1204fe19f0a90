"""The one place that decides which engine runs the game: the real ``egg.core`` when it is importable,
the built-in EGG-compatible engine otherwise. The rest of the package goes through ``load_engine``.

Differences kept on purpose under real EGG: checkpoints and baselines are this package's (EGG's
save the frozen CLIP and cannot be resumed on torch >= 2.6; EGG's baselines keep no state in
checkpoints), and EGG's options are handed to ``egg.core.init`` as argv, since its Trainer reads them
from ``core.get_opts()``.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import torch

from egg_zoo_discritune.engine.distributed import DistributedContext, current_context, init_distributed, launched_by_torchrun

ENGINES = ("auto", "egg", "builtin")


@dataclass(frozen=True)
class Engine:
    name: str
    module: Any

    def __getattr__(self, item: str) -> Any:
        return getattr(self.module, item)

    def init(self, *, use_cuda: bool, validation_freq: int = 1, update_freq: int = 1, fp16: bool = False,
             random_seed: int = 0, tensorboard_dir: Optional[str] = None) -> DistributedContext:
        """The engine's process-wide start; under torchrun it joins the process group. EGG reads its
        Trainer's options from ``core.get_opts()`` and initialises torch.distributed itself (NCCL only)."""
        if self.name == "builtin":
            if tensorboard_dir is not None:
                raise ValueError("--tensorboard is EGG's TensorboardLogger: install EGG (make install) or leave it out")
            return init_distributed(use_cuda)
        if tensorboard_dir is not None and importlib.util.find_spec("tensorboard") is None:
            raise ValueError("--tensorboard needs the tensorboard package: pip install tensorboard")
        if launched_by_torchrun() and not use_cuda:
            raise ValueError("EGG's distributed mode is NCCL-only (GPUs); run CPU processes with --engine builtin")
        argv = [f"--validation_freq={validation_freq}", f"--update_freq={update_freq}", f"--random_seed={random_seed}"]
        if fp16:
            argv.append("--fp16")
        if not use_cuda:
            argv.append("--no_cuda")
        if tensorboard_dir is not None:
            argv += ["--tensorboard", f"--tensorboard_dir={tensorboard_dir}"]
        self.module.init(params=argv)
        return current_context()

    def make_trainer(self, game: torch.nn.Module, optimizer: torch.optim.Optimizer, train_data: Sequence,
                     validation_data: Optional[Sequence], callbacks: list, *, device: torch.device,
                     validation_freq: int = 1, update_freq: int = 1, fp16: bool = False,
                     grad_norm: Optional[float] = None) -> Any:
        """EGG's Trainer (after ``init``, which handed it these options) or the built-in one."""
        kwargs = dict(game=game, optimizer=optimizer, train_data=train_data, validation_data=validation_data,
                      device=device, callbacks=callbacks, grad_norm=grad_norm)
        if self.name == "builtin":
            return self.module.Trainer(**kwargs, validation_freq=validation_freq, update_freq=update_freq, fp16=fp16)
        return self.module.Trainer(**kwargs)


def _real_egg() -> Optional[Any]:
    try:
        core = importlib.import_module("egg.core")
    except ImportError:
        return None
    return core if all(hasattr(core, n) for n in ("Trainer", "Interaction", "LoggingStrategy", "init")) else None


def load_engine(choice: str = "auto") -> Engine:
    """``auto``: egg.core if importable, else built-in; ``egg``: egg.core or an error; ``builtin``."""
    if choice not in ENGINES:
        raise ValueError(f"unknown engine {choice!r}; expected one of {ENGINES}")
    if choice != "builtin":
        core = _real_egg()
        if core is not None:
            return Engine("egg", core)
        if choice == "egg":
            raise ImportError("--engine egg: egg.core is not importable; install EGG "
                              "(pip install git+https://github.com/facebookresearch/EGG.git) or use --engine auto")
    return Engine("builtin", importlib.import_module("egg_zoo_discritune.engine"))
