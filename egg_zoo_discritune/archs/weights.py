"""Loading weights from local files or the Hugging Face hub, with errors that say what to download."""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import torch

from egg_zoo_discritune.torch_files import load_torch_file


# Where the public files the presets name come from.
KNOWN_FILES = {
    "coco_weights.pt": "ClipCap's COCO model (MLP mapper): Google Drive id 1IdaBtMSvtyzF0ByVaBHtvM0JYSXRExRX, "
                       "linked from the README of github.com/rmokady/CLIP_prefix_caption",
    "conceptual_weights.pt": "ClipCap's Conceptual Captions model (MLP mapper): Google Drive id "
                             "14pXWwB4Zm82rsDdvbGguLfx9F8aM7ovT, linked from the ClipCap README",
    "ViT-B-32.pt": "OpenAI's CLIP ViT-B/32, the file clip.load('ViT-B/32') caches in ~/.cache/clip",
}


def cpu_state_dict(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A detached CPU copy of ``module``'s state dict: what an export writes, untouched by later training."""
    return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}


class MissingWeightsError(FileNotFoundError):
    """Raised when a model or weight file cannot be found; the message says what to fetch and where."""


def pretrained_or_error(cls: Any, name: str, what: str, **kwargs: Any) -> Any:
    """``cls.from_pretrained(name)``; an unreachable hub or a wrong path becomes one clear error."""
    try:
        return cls.from_pretrained(name, **kwargs)
    except (OSError, ValueError) as err:
        local = Path(name).exists()
        raise MissingWeightsError(
            f"could not load {what} from {name!r}: "
            + (f"the directory exists but is not a saved Hugging Face model ({err})" if local else
               "no such local directory, and the Hugging Face hub is unreachable or has no such repo. "
               f"On a connected machine run `hf download {name} --local-dir DIR` (or copy the hub cache, "
               "~/.cache/huggingface) and pass DIR instead")
        ) from err


def load_state_dict_file(path: Path, what: str, trust_torchscript: bool = False) -> dict[str, torch.Tensor]:
    """A state dict saved with ``torch.save`` (or, when trusted, a TorchScript archive), on the CPU,
    without unpickling anything but tensors."""
    if not path.is_file():
        hint = KNOWN_FILES.get(path.name, "download it")
        raise MissingWeightsError(f"{what} not found at {path}. Get it from: {hint}; then pass its path")
    if zipfile.is_zipfile(path) and _is_torchscript(path):
        if not trust_torchscript:
            raise ValueError(f"{path}: {what} is a TorchScript archive, and loading one deserialises the code it "
                             "carries; it is read only with --trust_torchscript (for OpenAI CLIP .pt files from a "
                             "source you trust)")
        return {k: v for k, v in torch.jit.load(str(path), map_location="cpu").state_dict().items()}
    state = load_torch_file(path, what)
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path}: expected {what} saved as a dict of tensors")
    return state


def _is_torchscript(path: Path) -> bool:
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith("constants.pkl") for name in archive.namelist())
