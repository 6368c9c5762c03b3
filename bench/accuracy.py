"""Accuracy of every shipped classifier archive on FER2013 PublicTest and on CK+ (7 classes).

Runs the archives through the same handler code TorchServe runs (`fer-train evaluate`'s
path). Prints a table and saves `bench/results/accuracy.json`.

    python -m bench.accuracy [--store model_store] [--datasets ../shared/datasets]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from bench.common import ROOT, save
from service.archive import read_manifest
from training import report
from training.data.fer2013 import load_npz
from training.evaluate import load_handler


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--store", default=str(ROOT / "model_store"))
    p.add_argument("--datasets", default=str(ROOT.parent / "shared" / "datasets"))
    args = p.parse_args()
    datasets = Path(args.datasets)
    sets = {"fer2013_public_test": load_npz(datasets / "fer2013" / "public_test.npz")}
    ck = datasets / "ckplus" / "ckplus.npz"
    if ck.exists():
        from training.data.ckplus import load_ckplus, tdgan_protocol

        sets["ckplus_7class"] = tdgan_protocol(load_ckplus(ck))
    rows = []
    for mar in sorted(Path(args.store).glob("*.mar")):
        _, meta = read_manifest(mar)
        if meta.kind not in ("classifier", "derl"):
            continue
        handler = load_handler(mar)
        for set_name, data in sets.items():
            t = time.perf_counter()
            probs = handler.predict_arrays(data.images)
            seconds = time.perf_counter() - t
            s = report.summary(data.labels, probs, handler.classes)
            rows.append(
                {
                    "model": mar.stem,
                    "data": set_name,
                    "n": s["n"],
                    "accuracy": s["accuracy"],
                    "per_class": s["per_class"],
                    "ms_per_face": 1000 * seconds / max(1, s["n"]),
                }
            )
    print(f"{'model':<12}{'data':<22}{'n':>6}{'accuracy':>10}{'ms/face':>9}")
    for r in rows:
        print(
            f"{r['model']:<12}{r['data']:<22}{r['n']:>6}{r['accuracy']:>10.4f}"
            f"{r['ms_per_face']:>9.2f}"
        )
    print(f"saved {save('accuracy', {'settings': {'batch': 512, 'device': 'cpu'}, 'rows': rows})}")


if __name__ == "__main__":
    main()
