"""discritune-plot: the training curves of real runs, overlaid, as PNG and SVG."""

import json

import pytest
from PIL import Image

from egg_zoo_discritune.plot import main as plot
from egg_zoo_discritune.train import main as train
from tests.test_train import _argv


def test_plot_overlays_runs_as_png_and_svg(tiny, tmp_path):
    run = train(_argv(tiny, tmp_path / "tiny-run", "--n_epochs", "2", "--kl_coeff", "0.1"))
    other = tmp_path / "other" / "log.jsonl"
    other.parent.mkdir()
    other.write_text("".join(json.dumps({"mode": "train_step", "step": s, "reward": -s, "acc": s / 10, "loss": 1.0})
                             + "\n" for s in (1, 2, 3)))
    png, svg = plot([str(run), str(other), "--output_dir", str(tmp_path / "plots")])
    with Image.open(png) as image:
        assert image.format == "PNG" and image.width > 1000
    text = svg.read_text()
    for expected in ("tiny-run", "other", "reward", "P@1 (train: in-batch; o: validation)", "KL to the initial",
                     "caption length (tokens)", "entropy per token", "baseline"):
        assert expected in text, expected


def test_plot_says_what_is_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="no training log"):
        plot([str(tmp_path)])
    (tmp_path / "log.jsonl").write_text('{"mode": "test", "acc": 0.5}\n')
    with pytest.raises(ValueError, match="no per-update lines"):
        plot([str(tmp_path)])
    with pytest.raises(ValueError, match="same name"):
        plot([str(tmp_path), str(tmp_path)])
