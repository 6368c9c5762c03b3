"""The frame-to-sequence model on CK+, subject-independent: pool the folds of
`fer-train sequence --holdout-folds K --json` runs (one folder and log per fold) into one
figure per model, saved to `bench/results/sequence_ckplus_cv.json`.

The sequence model's figure of a fold is its accuracy after the last epoch (a fixed
schedule), not its best epoch: the held-out sequences are the validation set of the run,
so choosing the best epoch on them would flatter it. The frame classifier's figures (mean
of its frame probabilities, and its last frame) are on the same held-out sequences.

    python -m bench.sequence_cv runs/seq_cv     # folds in runs/seq_cv/fold<K>{,.log}
    python -m bench.sequence_cv runs/seq_cv_frame --name sequence_ckplus_cv_window1
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from bench.common import save


def fold_figures(run: Path, log: Path) -> dict[str, Any]:
    """One fold: n, and the correct answers of each model on its held-out sequences."""
    best = json.loads(log.read_text().strip().splitlines()[-1])
    history = json.loads((run / "history.json").read_text())
    n = int(best["frame_mean"]["n"])
    last = history[-1]["val_acc"]
    return {
        "n": n,
        "sequence_last_epoch": round(last * n),
        "sequence_best_epoch": round(best["accuracy"] * n),
        "frame_mean": round(best["frame_mean"]["accuracy"] * n),
        "frame_last": round(best["frame_last"]["accuracy"] * n),
        "epochs": len(history),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", type=Path, help="folder with fold<K>/ and fold<K>.log")
    p.add_argument("--name", default="sequence_ckplus_cv", help="bench/results/<NAME>.json")
    args = p.parse_args(argv)
    folds = {}
    for log in sorted(args.runs.glob("fold*.log")):
        run = args.runs / log.stem
        if (run / "history.json").exists():
            try:
                folds[log.stem] = fold_figures(run, log)
            except (ValueError, KeyError, IndexError):
                continue  # a fold still running
    n = sum(f["n"] for f in folds.values())
    pooled = {
        key: round(sum(f[key] for f in folds.values()) / max(n, 1), 4)
        for key in ("sequence_last_epoch", "sequence_best_epoch", "frame_mean", "frame_last")
    }
    figures = {"folds": folds, "sequences": n, "accuracy": pooled}
    path = save(args.name, {"runs": str(args.runs), **figures})
    print(f"{len(folds)} folds, {n} held-out CK+ sequences: {pooled} -> {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
