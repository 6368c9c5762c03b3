#!/usr/bin/env bash
# One prepared command for a GPU window (see docs/training.md, "Training on a rented GPU"):
# the training-speed benchmark on the device, then a TDGAN run that stops by itself before
# its budget, its results copied to $OUT (at most 8 files of 16 MB: files over 15 MB are
# split into parts; join them with `cat NAME.part-* > NAME`).
#
#   DATA=data OUT=/tmp/out BUDGET=420 bash bench/gpu_session.sh [extra fer-train tdgan flags]
#
# DATA holds the bundles written by `fer-train bundle` (ckplus.npz, fer2013_train.npz,
# fer2013_public_test.npz). Rehearse it on a CPU with a tiny budget first:
#   DATA=/tmp/bundles OUT=/tmp/out BUDGET=60 SPEED_STEPS=2 bash bench/gpu_session.sh --threads 1
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH=.
DATA=${DATA:-data}
OUT=${OUT:?set OUT to the folder whose files come back}
BUDGET=${BUDGET:-420}
SPEED_STEPS=${SPEED_STEPS:-30}
PY=${PYTHON:-python3}
RUN=${RUN:-runs/tdgan}
mkdir -p "$OUT"

"$PY" -m bench.train_speed --steps "$SPEED_STEPS" --name train_speed 2>&1 | tee "$OUT/session.log"
cp bench/results/train_speed.json "$OUT/"
# Compiled steps (torch.compile; CUDA graphs with reduce-overhead): measured, never fatal.
for mode in ${SPEED_COMPILE:-default reduce-overhead}; do
  "$PY" -m bench.train_speed --steps "$SPEED_STEPS" --warmup 5 --compile "$mode" \
    --only tdgan tdgan-paper --name "train_speed_$mode" >>"$OUT/session.log" 2>&1 \
    && cp "bench/results/train_speed_$mode.json" "$OUT/" || echo "compile $mode failed" >>"$OUT/session.log"
done

"$PY" -m training tdgan --ckplus "$DATA/ckplus.npz" --fer2013 "$DATA/fer2013_train.npz" \
  --val "$DATA/fer2013_public_test.npz" --holdout-folds 0 --out "$RUN" --quiet \
  --time-budget "$BUDGET" "$@" 2>&1 | tee -a "$OUT/session.log"

cp "$RUN/history.json" "$OUT/tdgan_history.json"
last_grid=$(ls "$RUN"/samples_*.png | tail -1)
cp "$last_grid" "$OUT/"
if [ "$(stat -c %s "$RUN/export.pt")" -gt 15000000 ]; then
  split -b 15000000 -d "$RUN/export.pt" "$OUT/export.pt.part-"
else
  cp "$RUN/export.pt" "$OUT/"
fi
ls -la "$OUT"
