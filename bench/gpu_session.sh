#!/usr/bin/env bash
# One prepared command for a GPU window (see docs/training.md, "Training on a rented GPU"):
# the training-speed benchmark on the device, then a TDGAN run that stops by itself before
# the command's deadline, its results copied to $OUT (at most 8 files of 16 MB: files over
# 15 MB are split into parts; join them with `cat NAME.part-* > NAME`).
#
#   DATA=data OUT=/tmp/out bash bench/gpu_session.sh [extra fer-train tdgan flags]
#
# DATA holds the bundles written by `fer-train bundle` (ckplus.npz, fer2013_train.npz,
# fer2013_public_test.npz). DEADLINE (seconds, default 540) bounds the whole command, below
# the device's 600 s a command: the run's --time-budget is what is left of it after the
# benchmark, less MARGIN (default 40) for copying the results. Called again on the same
# warm machine, it skips the benchmark and continues the run (--resume; the run keeps its
# saved settings). SPEED_COMPILE="default reduce-overhead" also times compiled steps
# (torch.compile; minutes of compiling each, so off by default; each is cut off where it
# would leave the run under MIN_TRAIN seconds, default 240). Rehearse it on a CPU first:
#   DATA=/tmp/bundles OUT=/tmp/out DEADLINE=120 SPEED_STEPS=2 bash bench/gpu_session.sh --threads 1
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH=.
start=$(date +%s)
DATA=${DATA:-data}
OUT=${OUT:?set OUT to the folder whose files come back}
DEADLINE=${DEADLINE:-540}
MARGIN=${MARGIN:-40}
MIN_TRAIN=${MIN_TRAIN:-240}
SPEED_STEPS=${SPEED_STEPS:-30}
SPEED_COMPILE=${SPEED_COMPILE:-}
PY=${PYTHON:-python3}
RUN=${RUN:-runs/tdgan}
mkdir -p "$OUT"
left() { echo $((DEADLINE - ($(date +%s) - start))); }

resume=()
if [ -f "$RUN/last.pt" ]; then
  echo "continuing $RUN (benchmark skipped)" | tee "$OUT/session.log"
  resume=(--resume)
else
  "$PY" -m bench.train_speed --steps "$SPEED_STEPS" --name train_speed 2>&1 | tee "$OUT/session.log"
  cp bench/results/train_speed.json "$OUT/"
  # Compiled steps: measured where time allows, never fatal.
  for mode in $SPEED_COMPILE; do
    allowed=$(($(left) - MARGIN - MIN_TRAIN))
    if [ "$allowed" -lt 60 ]; then
      echo "compile $mode skipped: no time" >>"$OUT/session.log"
      continue
    fi
    timeout "$allowed" "$PY" -m bench.train_speed --steps "$SPEED_STEPS" --warmup 12 \
      --compile "$mode" --only tdgan --name "train_speed_$mode" >>"$OUT/session.log" 2>&1 \
      && cp "bench/results/train_speed_$mode.json" "$OUT/" \
      || echo "compile $mode failed or cut off after $allowed s" >>"$OUT/session.log"
  done
fi

budget=$(($(left) - MARGIN))
if [ "$budget" -lt 30 ]; then
  echo "no time left to train ($budget s)" | tee -a "$OUT/session.log"
  exit 1
fi
"$PY" -m training tdgan --ckplus "$DATA/ckplus.npz" --fer2013 "$DATA/fer2013_train.npz" \
  --val "$DATA/fer2013_public_test.npz" --holdout-folds 0 --out "$RUN" --quiet \
  --time-budget "$budget" "${resume[@]}" "$@" 2>&1 | tee -a "$OUT/session.log"

cp "$RUN/history.json" "$OUT/tdgan_history.json"
last_grid=$(ls "$RUN"/samples_*.png | tail -1)
cp "$last_grid" "$OUT/"
if [ "$(stat -c %s "$RUN/export.pt")" -gt 15000000 ]; then
  split -b 15000000 -d "$RUN/export.pt" "$OUT/export.pt.part-"
else
  cp "$RUN/export.pt" "$OUT/"
fi
echo "done after $(($(date +%s) - start)) s" | tee -a "$OUT/session.log"
ls -la "$OUT"
