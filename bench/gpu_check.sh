#!/usr/bin/env bash
# The prepared check for a lent CUDA machine (under 8 minutes on one H100/H200): at batch 100 with every
# caption forced to 30 tokens,
#   1. the authors' update in fp32, as they ran it, then this package's on cached features in fp32, in fp32 with
#      --compile, and with --precision auto (bf16 on compute capability >= 8.0) with and without --compile:
#      s/update, tokens/s, peak GPU memory, the first update's time (compiling included) (bench/speed.py);
#   2. 50 updates of `train --preset paper-coco --precision auto` on a random world in the real file formats
#      (bench/random_world.py), wall time from launch to the exported captioner;
#   3. the projection of the paper's COCO recipe (20 epochs x 1,132 updates) from the measured s/update.
#
#   bench/gpu_check.sh            # on the GPU machine
#   bench/gpu_check.sh --dry-run  # anywhere: tiny models on the CPU, 2 updates, the same steps (tested)
#
# Environment: PY (this package's python, default .venv/bin/python), REF and PEER_PYTHON (the authors' tree
# and its environment, bench/peer/README.md; without them step 1 times this package only), OUT (default
# /tmp/gpu_check).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${OUT:-/tmp/gpu_check}
mkdir -p "$OUT"

if [[ "${1:-}" == "--dry-run" ]]; then
    DEVICE=cpu BATCH=4 UPDATES=2 TINY=--tiny TIMING=(--warmup 1 --repeats 1)
    TRAIN_DEVICE=(--no_cuda)
else
    DEVICE=cuda BATCH=100 UPDATES=50 TINY= TIMING=(--warmup 3 --repeats 5)
    TRAIN_DEVICE=()
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
fi
"$PY" -c "import torch; print('torch', torch.__version__, '| cuda', torch.cuda.is_available() and torch.cuda.get_device_name(0))"

echo "== 1. one update at batch $BATCH, 30 caption tokens ($DEVICE)"
AUTHORS=()
if [[ -n "${REF:-}" && -n "${PEER_PYTHON:-}" && -z "$TINY" ]]; then
    AUTHORS=(--ref "$REF" --peer_python "$PEER_PYTHON")
else
    echo "(the authors' code is not timed: needs REF and PEER_PYTHON, and full-size models)"
fi
"$PY" bench/speed.py "${AUTHORS[@]}" --device "$DEVICE" --batch_sizes "$BATCH" "${TIMING[@]}" $TINY \
    --updates "this package, cached features, fp32" "this package, cached features, fp32, --compile" \
    "this package, cached features, auto" "this package, cached features, auto, --compile" \
    --out "$OUT/speed.json" 2>"$OUT/speed.log"
"$PY" - "$OUT/speed.json" "$BATCH" <<'EOF'
import json, sys
result = json.load(open(sys.argv[1]))["batches"][sys.argv[2]]
for name, r in result.items():
    print(f"{name}: {r['median_s']:.3f} s/update, {r.get('tokens_per_s', 0):.0f} tokens/s, "
          f"peak GPU {r.get('peak_gpu_gib', 0):.2f} GiB, precision {r.get('precision', 'fp32')}, "
          f"first update {r.get('first_update_s', 0):.1f} s")
fastest = min(r["median_s"] for name, r in result.items() if name.startswith("this package"))
print(f"projection of the paper's COCO recipe (22,640 updates) at {fastest:.3f} s/update: {22640 * fastest / 3600:.2f} h")
EOF

echo "== 2. $UPDATES updates of --preset paper-coco --precision auto on a random world"
WORLD=$("$PY" bench/random_world.py --out "$OUT/world" --train_images $((BATCH * UPDATES)) --val_images "$BATCH" $TINY)
rm -rf "$OUT/run"
START=$(date +%s.%N)
# shellcheck disable=SC2086  # WORLD is a list of flags
"$PY" -m egg.zoo.discritune.train --preset paper-coco $WORLD --precision auto --batch_size "$BATCH" --n_epochs 1 \
    --validation_freq 0 --no-include_restval --num_workers 8 --log_every 10 --checkpoint_dir "$OUT/run" \
    "${TRAIN_DEVICE[@]}" >"$OUT/train.log" 2>&1
END=$(date +%s.%N)
grep -E "precision auto|engine:" "$OUT/train.log" | sed 's/^.* INFO //'
echo "$UPDATES updates: $(echo "$END - $START" | bc) s from launch to the exported captioner (model loading included)"
