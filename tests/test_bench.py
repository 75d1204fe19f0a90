"""The prepared GPU check runs end to end in its CPU dry-run mode (tiny models, batch 4, 2 updates)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from egg_zoo_discritune.compiled import missing_backend

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_dry_run(tmp_path):
    env = {**os.environ, "PY": sys.executable, "OUT": str(tmp_path)}
    env.pop("REF", None)
    done = subprocess.run(["bash", str(ROOT / "bench" / "gpu_check.sh"), "--dry-run"], env=env, capture_output=True,
                          text=True, timeout=600)
    speed_log = (tmp_path / "speed.log").read_text()[-2000:] if (tmp_path / "speed.log").is_file() else ""
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:] + speed_log
    out = done.stdout
    speed = json.loads((tmp_path / "speed.json").read_text())["batches"]["4"]
    assert set(speed) == {"this package, cached features, fp32", "this package, cached features, fp32, --compile",
                          "this package, cached features, auto", "this package, cached features, auto, --compile"}
    if missing_backend(torch.device("cpu")) is None:
        assert "runs eagerly" not in (tmp_path / "speed.log").read_text()  # --compile compiled
    for result in speed.values():
        assert result["caption_tokens"] == [30] and result["median_s"] > 0 and result["peak_rss_update_gib"] > 0
    if torch.backends.mkldnn.is_available():  # which way the oneDNN probes went is recorded
        probes = speed["this package, cached features, fp32"]["onednn_probes"]
        assert set(probes) == {"no-grad float32", "trained float32"} and min(probes.values()) > 0
    assert "s/update" in out and "projection of the paper's COCO recipe (22,640 updates)" in out
    assert "precision auto:" in out  # the training run logged its choice
    assert "2 updates:" in out and "from launch to the exported captioner" in out
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if r["mode"] == "train"] == [2]  # 8 images at batch 4
    assert (tmp_path / "run" / "clipcap_finetuned.pt").is_file()
