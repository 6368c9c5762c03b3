"""Speed of the `fer` PyPI package (justinshenk/fer) and of fer-service on the same photos,
in the same run, with the ratio.

The `fer` side runs in a virtualenv of its own (`--venv`, default
`~/.cache/fer-service-bench/fer-venv`, made once with the pinned set below and reused
while its pins match): `bench/peers_fer_worker.py`, run by that venv's python, loads
`FER()` once and times `cv2.imdecode(bytes)` + `detect_emotions(image)` in process. fer's
emotion model and Haar cascade ship inside its wheel, the worker refuses network access,
and nothing in the pinned set downloads weights. Then, after the fer side has exited,
`fer-service serve` (embedded backend) is started and `POST /classify` timed end to end
over HTTP on loopback, from the photo's bytes to the parsed reply, as bench/latency.py
does (`bench.common.ClassifyClient`: one keep-alive connection, the photo as the body).
Each side: one warm-up, then `--n` sequential runs per photo; p50 and p95.
Saves `bench/results/peers.json`.

    python -m bench.peers [--n 20] [--venv PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import ROOT, gateway_process, save, time_photos
from bench.latency import PHOTOS

WORKER = ROOT / "bench" / "peers_fer_worker.py"
DEFAULT_VENV = Path.home() / ".cache" / "fer-service-bench" / "fer-venv"

# fer itself, installed without its declared dependencies: those pull facenet-pytorch
# (and an unpinned torch, a multi-GB CUDA build), moviepy, ffmpeg-python, pandas, tqdm and
# matplotlib, none of which `from fer.fer import FER; FER().detect_emotions(...)` imports
# (they serve MTCNN detection and fer.classes.Video).
FER_PACKAGE = "fer==25.10.3"
# What that code path does import: tensorflow (tf.lite.Interpreter for the default
# quantized model; `tensorflow.keras` at import), cv2 (Haar cascade; OpenCV 4.x, since 5.x
# dropped the cascades; the same OpenCV as the project's), numpy, PIL, requests and
# pkg_resources (setuptools < 81).
FER_RUNTIME = [
    "tensorflow-cpu==2.21.0",
    "opencv-python-headless==4.14.0.94",
    "pillow==13.0.0",
    "requests==2.34.2",
    "setuptools==80.9.0",
]
# Everything those resolve to, pinned, so that the set is the same on every machine.
FER_CONSTRAINTS = [
    "absl-py==2.5.1",
    "astunparse==1.6.3",
    "certifi==2026.10.19.post1",
    "charset-normalizer==3.5.3",
    "flatbuffers==25.12.19",
    "gast==0.7.0",
    "google-pasta==0.2.0",
    "grpcio==1.85.4",
    "h5py==3.14.0",
    "idna==3.21",
    "keras==3.15.1",
    "libclang==18.1.1",
    "markdown-it-py==4.3.0",
    "mdurl==0.1.2",
    "ml-dtypes==0.7.0",
    "namex==0.1.0",
    "numpy==2.4.6",
    "opt-einsum==3.4.0",
    "optree==0.20.0",
    "packaging==26.4",
    "protobuf==7.36.2",
    "pygments==2.21.0",
    "rich==15.0.0",
    "six==1.17.0",
    "termcolor==3.3.0",
    "typing-extensions==4.16.0",
    "urllib3==2.8.0",
    "wheel==0.48.0",
    "wrapt==2.5.2",
]
MARKER = "fer-service-bench.json"  # in the venv: the pins it was made with, install time


def pins() -> list[str]:
    return [FER_PACKAGE, *FER_RUNTIME, *FER_CONSTRAINTS]


def ensure_venv(venv: Path) -> dict[str, Any]:
    """The fer virtualenv, made (or remade, where its pins differ) with the pinned set."""
    marker = venv / MARKER
    if marker.exists():
        made = json.loads(marker.read_text())
        if made.get("pins") == pins():
            return {**made, "reused": True}
    if venv.exists():
        shutil.rmtree(venv)
    venv.parent.mkdir(parents=True, exist_ok=True)
    print(f"making the fer virtualenv in {venv} (once)", flush=True)
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install"]
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
        f.write("\n".join(FER_CONSTRAINTS) + "\n")
    try:
        _pip([*pip, "-c", f.name, *FER_RUNTIME])
    finally:
        os.unlink(f.name)
    _pip([*pip, "--no-deps", FER_PACKAGE])
    made = {"pins": pins(), "install_s": round(time.perf_counter() - t0, 1)}
    marker.write_text(json.dumps(made, indent=1) + "\n")
    return {**made, "reused": False}


def _pip(command: list[str]) -> None:
    """pip, quiet unless it fails (its warnings about fer's undeclared dependencies, which
    `--no-deps` leaves out on purpose, are noise here)."""
    out = subprocess.run(command, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{out.stdout[-3000:]}{out.stderr[-3000:]}")


def run_fer(venv: Path, photos: list[Path], n: int) -> dict[str, Any]:
    out = subprocess.run(
        [str(venv / "bin" / "python"), str(WORKER), "--n", str(n), *map(str, photos)],
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
        capture_output=True,
        text=True,
    )
    if out.returncode != 0:
        raise SystemExit(f"the fer worker failed:\n{out.stderr[-4000:]}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    if result["network_attempts"]:
        raise SystemExit(f"the fer side tried the network: {result['network_attempts']}")
    return result


def run_service(url: str, photos: list[Path], n: int) -> dict[str, Any]:
    return time_photos(url, {path.name: path.read_bytes() for path in photos}, n)


def iou(a: list[int], b: list[int]) -> float:
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    w = max(0, min(ax + aw, bx + bw) - max(ax, bx))
    h = max(0, min(ay + ah, by + bh) - max(ay, by))
    inter = w * h
    union = aw * ah + bw * bh - inter
    return inter / union if union else 0.0


def matched(fer_boxes: list[list[int]], service_boxes: list[list[int]]) -> int:
    """Faces found by both: pairs of a fer box and a fer-service box, each used once, that
    overlap with IoU >= 0.3 (the two detectors draw boxes of different extent around the
    same face), paired greedily by IoU."""
    pairs = sorted(
        ((iou(a, b), i, j) for i, a in enumerate(fer_boxes) for j, b in enumerate(service_boxes)),
        reverse=True,
    )
    used_fer: set[int] = set()
    used_service: set[int] = set()
    for overlap, i, j in pairs:
        if overlap >= 0.3 and i not in used_fer and j not in used_service:
            used_fer.add(i)
            used_service.add(j)
    return len(used_fer)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--n", type=int, default=20)
    p.add_argument(
        "--venv", type=Path, default=Path(os.environ.get("FER_PEERS_VENV", DEFAULT_VENV))
    )
    args = p.parse_args()
    photos = [ROOT / "tests" / "data" / name for name in PHOTOS]

    install = ensure_venv(args.venv)
    fer = run_fer(args.venv, photos, args.n)
    with gateway_process({}) as server:
        service = run_service(server.url, photos, args.n)

    rows: dict[str, Any] = {}
    for path in photos:
        f, s = fer["results"][path.name], service[path.name]
        rows[path.name] = {
            "faces_fer": f["faces"],
            "faces_fer_service": s["faces"],
            "faces_found_by_both": matched(f["boxes"], s["boxes"]),
            "fer_p50_ms": f["p50_ms"],
            "fer_p95_ms": f["p95_ms"],
            "fer_service_p50_ms": s["p50_ms"],
            "fer_service_p95_ms": s["p95_ms"],
            "ratio_fer_over_fer_service": f["p50_ms"] / s["p50_ms"],
        }
    sum_fer = sum(r["fer_p50_ms"] for r in rows.values())
    sum_service = sum(r["fer_service_p50_ms"] for r in rows.values())
    overall = sum_fer / sum_service

    print(
        f"{'photo':<18}{'faces':>6}{'faces':>6}{'both':>6}{'fer p50':>9}{'fer p95':>9}"
        f"{'f-s p50':>9}{'f-s p95':>9}{'fer/f-s':>9}"
    )
    print(f"{'':<18}{'fer':>6}{'f-s':>6}")
    for name, r in rows.items():
        print(
            f"{name:<18}{r['faces_fer']:>6}{r['faces_fer_service']:>6}"
            f"{r['faces_found_by_both']:>6}{r['fer_p50_ms']:>9.1f}{r['fer_p95_ms']:>9.1f}"
            f"{r['fer_service_p50_ms']:>9.1f}{r['fer_service_p95_ms']:>9.1f}"
            f"{r['ratio_fer_over_fer_service']:>9.2f}"
        )
    print(f"{'sum of p50s':<36}{sum_fer:>9.1f}{'':>9}{sum_service:>9.1f}{'':>9}{overall:>9.2f}")
    print(
        f"ms over {args.n} runs per photo after one warm-up. fer {FER_PACKAGE[5:]}: "
        "cv2.imdecode(bytes) + FER().detect_emotions(), in process. fer-service (f-s): "
        "POST /classify over HTTP on loopback, bytes to parsed JSON. fer/f-s > 1: "
        "fer-service is faster. both: faces the two detectors found in common (IoU >= 0.3)."
    )
    settings = {
        "n": args.n,
        "warmup": 1,
        "photos": PHOTOS,
        "order": "fer side first (its own process, exited), then the fer-service gateway",
        "timed_fer": "cv2.imdecode(bytes, IMREAD_COLOR) + FER().detect_emotions(image), in "
        "process (no HTTP, no serialisation)",
        "timed_fer_service": "POST /classify (the bytes as an image/jpeg body, one keep-alive "
        "http.client connection: bench.common.ClassifyClient) to `fer-service serve`, "
        "embedded backend, default settings, over HTTP on loopback, reply parsed",
    }
    fer_side = {
        "package": FER_PACKAGE,
        "install": {
            "pins": install["pins"],
            "install_s": install["install_s"],
            "reused": install["reused"],
        },
        **{k: v for k, v in fer.items() if k != "results"},
        "results": fer["results"],
    }
    figures = {
        "settings": settings,
        "results": rows,
        "sum_p50_ms": {"fer": sum_fer, "fer_service": sum_service},
        "ratio_fer_over_fer_service": overall,
        "fer": fer_side,
        "fer_service": service,
    }
    print(f"saved {save('peers', figures)}")


if __name__ == "__main__":
    main()
