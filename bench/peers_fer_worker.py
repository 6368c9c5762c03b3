"""The `fer` side of `bench/peers.py`: run by the python of fer's own virtualenv, not the
project's (fer needs TensorFlow, which the project does not install).

Loads `FER()` once (its defaults: OpenCV's Haar cascade face detector, the quantized TFLite
emotion model shipped inside the wheel), then for each photo times
`cv2.imdecode(bytes)` + `detector.detect_emotions(image)` in this process: one warm-up,
then `--n` runs. Network access is refused in this process, so a weight download at run
time would fail instead of passing unnoticed. Prints one JSON object on stdout.

    <fer venv>/bin/python bench/peers_fer_worker.py --n 20 tests/data/astronaut.jpg ...
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

NETWORK_ATTEMPTS: list[str] = []


def _no_network(*args: Any, **kwargs: Any) -> Any:
    NETWORK_ATTEMPTS.append(repr(args)[:200])
    raise OSError(f"network access refused on the fer side of bench/peers.py: {args!r}")


def block_network() -> None:
    socket.socket.connect = _no_network  # type: ignore[method-assign]
    socket.socket.connect_ex = _no_network  # type: ignore[method-assign]
    socket.create_connection = _no_network
    socket.getaddrinfo = _no_network


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--n", type=int, default=20)
    p.add_argument("photos", nargs="+", type=Path)
    args = p.parse_args()
    block_network()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    t0 = time.perf_counter()
    import cv2
    import numpy as np
    import tensorflow as tf
    from fer.fer import FER

    import_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    detector = FER()  # the defaults: mtcnn=False (Haar cascade), use_tflite=True
    load_s = time.perf_counter() - t0

    results: dict[str, Any] = {}
    for path in args.photos:
        data = path.read_bytes()

        def once(data: bytes = data) -> tuple[float, float, list[Any]]:
            t = time.perf_counter()
            image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
            t_decoded = time.perf_counter()
            faces = detector.detect_emotions(image)
            t_done = time.perf_counter()
            return (t_done - t) * 1000, (t_decoded - t) * 1000, faces

        once()  # warm-up
        total, decode = [], []
        for _ in range(args.n):
            ms, decode_ms, faces = once()
            total.append(ms)
            decode.append(decode_ms)
        results[path.name] = {
            "faces": len(faces),
            "p50_ms": statistics.median(total),
            "p95_ms": percentile(total, 0.95),
            "decode_p50_ms": statistics.median(decode),
            "boxes": [[int(v) for v in f["box"]] for f in faces],
            "top_emotions": [max(f["emotions"], key=f["emotions"].get) for f in faces],
        }

    versions = {
        name: metadata.version(name)
        for name in ("fer", "tensorflow-cpu", "opencv-python-headless", "numpy", "pillow")
    }
    print(
        json.dumps(
            {
                "versions": versions,
                "python": sys.version.split()[0],
                "tensorflow": tf.__version__,
                "opencv": cv2.__version__,
                "opencv_threads": cv2.getNumThreads(),
                "import_s": import_s,
                "load_s": load_s,
                "detector": "FER() defaults: OpenCV Haar cascade (haarcascade_frontalface_default)"
                ", quantized TFLite emotion model (emotion_model_quantized.tflite, in the wheel)",
                "network_attempts": NETWORK_ATTEMPTS,
                "results": results,
            }
        )
    )


if __name__ == "__main__":
    main()
