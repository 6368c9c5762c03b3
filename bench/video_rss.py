"""Memory of a video job over a long 720p clip: is the job's RSS flat in the clip's length?

Makes a clip with PyAV (default 2 minutes of 1280x720 at 30 fps, H.264: a test photo's
face gliding over a grey background, with a few seconds without any face), runs one
`POST /classify/video` job on it in an embedded gateway in this process (LocalJobs and
LocalBackend, exactly what a Celery worker runs), samples the process' RSS every 0.25 s
while the job runs, and saves the curve (RSS against sampled frames done) to
`bench/results/video_rss.png` and the figures to `bench/results/video_rss.json`.

    python -m bench.video_rss                 # 120 s clip, fps 5
    python -m bench.video_rss --seconds 30 --fps 10
    python -m bench.video_rss --worker        # on a real Celery worker (Redis at FER_REDIS_URL)

With `--worker` the job runs where production runs it: a `fer-service worker` process
(Celery, prefork, concurrency 1) behind a `fer-service serve` gateway with
`FER_JOBS=celery`; the RSS sampled is that of the worker's process tree (the pool process
that runs the job, and its parent), and the results go to `video_rss_worker.*`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import threading
import time
from pathlib import Path
from typing import Any

import av
import numpy as np
import psutil
from PIL import Image

from bench.common import RESULTS, save

PHOTO = Path(__file__).resolve().parents[1] / "tests" / "data" / "astronaut.jpg"


def make_clip(seconds: float, rate: int = 30, size: tuple[int, int] = (1280, 720)) -> bytes:
    """A long clip of a face moving across the frame (none from 40 % to 45 % of it)."""
    face = Image.open(PHOTO).convert("RGB").resize((300, 300))
    background = Image.new("RGB", size, (120, 120, 120))
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=rate, options={"preset": "ultrafast", "crf": "28"})
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        total = int(seconds * rate)
        for i in range(total):
            frame = background.copy()
            if not 0.40 <= i / total < 0.45:
                phase = i / rate / 10.0
                x = int((size[0] - 300) * (0.5 + 0.5 * np.sin(phase)))
                y = int((size[1] - 300) * (0.5 + 0.3 * np.cos(phase * 0.7)))
                frame.paste(face, (x, y))
            for packet in stream.encode(av.VideoFrame.from_image(frame)):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return buf.getvalue()


async def run_job(clip: bytes, fps: float, samples: list[dict[str, float]]) -> dict[str, Any]:
    """One video job in an embedded gateway; `samples` get (t, rss, frames done)."""
    from service.client import embedded
    from service.settings import Settings

    settings = Settings(
        models=["compact"],
        max_video_bytes=max(64 * 1024 * 1024, len(clip) + 1),
        job_timeout=3600,
        job_visibility_timeout=7200,
    )
    progress = {"done": 0.0}

    def show(job: Any) -> None:
        if job.progress is not None:
            progress["done"] = float(job.progress.done)

    process = psutil.Process()
    stop = threading.Event()
    t0 = time.monotonic()

    def sample() -> None:
        while not stop.is_set():
            rss = process.memory_info().rss / 2**20
            samples.append({"t": time.monotonic() - t0, "rss_mb": rss, "done": progress["done"]})
            stop.wait(0.25)

    async with embedded(settings) as client:
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            answer = await client.classify_video(clip, fps=fps, timeout=3600, on_update=show)
        finally:
            stop.set()
            sampler.join()
    return answer.model_dump(mode="json")


def tree_rss_mb(process: psutil.Process) -> float:
    """RSS of a process and all its children, in MiB."""
    total = 0
    for p in [process, *process.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            total += p.memory_info().rss
    return total / 2**20


async def run_worker_job(
    clip: bytes, fps: float, samples: list[dict[str, float]]
) -> dict[str, Any]:
    """One video job on a real Celery worker behind a real gateway; `samples` get (t, the
    worker tree's RSS, frames done)."""
    import os
    import subprocess
    import sys

    from bench.common import gateway_process
    from service.client import AsyncClient

    env = {
        "FER_JOBS": "celery",
        "FER_REDIS_PREFIX": f"fer-bench-video-{os.getpid()}:",
        "FER_MODELS": '["compact"]',
        "FER_MAX_VIDEO_BYTES": str(max(64 * 1024 * 1024, len(clip) + 1)),
        "FER_JOB_TIMEOUT": "3600",
        "FER_JOB_VISIBILITY_TIMEOUT": "7200",
    }
    exe = str(Path(sys.executable).parent / "fer-service")
    worker = subprocess.Popen(
        [exe, "worker", "--concurrency", "1", "--loglevel", "warning"],
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    progress = {"done": 0.0}

    def show(job: Any) -> None:
        if job.progress is not None:
            progress["done"] = float(job.progress.done)

    stop = threading.Event()
    t0 = time.monotonic()
    tree = psutil.Process(worker.pid)

    def sample() -> None:
        while not stop.is_set():
            rss = tree_rss_mb(tree)
            samples.append({"t": time.monotonic() - t0, "rss_mb": rss, "done": progress["done"]})
            stop.wait(0.25)

    try:
        with gateway_process(env) as gw:
            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            try:
                async with AsyncClient(gw.url, timeout=120) as client:
                    answer = await client.classify_video(
                        clip, fps=fps, timeout=3600, on_update=show
                    )
            finally:
                stop.set()
                sampler.join()
    finally:
        worker.terminate()
        worker.wait(timeout=60)
    return answer.model_dump(mode="json")


def plot(samples: list[dict[str, float]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4))
    ax.plot([s["t"] for s in samples], [s["rss_mb"] for s in samples], color="tab:blue")
    ax.set_xlabel("seconds since the job was submitted")
    ax.set_ylabel("RSS (MiB)", color="tab:blue")
    other = ax.twinx()
    other.plot([s["t"] for s in samples], [s["done"] for s in samples], color="tab:orange")
    other.set_ylabel("sampled frames done", color="tab:orange")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=120.0, help="length of the clip")
    p.add_argument("--fps", type=float, default=5.0, help="the job's sampling rate")
    p.add_argument("--worker", action="store_true", help="run the job on a Celery worker")
    args = p.parse_args(argv)
    name = "video_rss_worker" if args.worker else "video_rss"
    t0 = time.monotonic()
    clip = make_clip(args.seconds)
    made = time.monotonic() - t0
    size = len(clip) / 1e6
    print(f"clip: {args.seconds:g} s of 1280x720 at 30 fps, {size:.1f} MB ({made:.0f} s)")
    samples: list[dict[str, float]] = []
    t1 = time.monotonic()
    job = run_worker_job if args.worker else run_job
    answer = asyncio.run(job(clip, args.fps, samples))
    took = time.monotonic() - t1
    done = [s for s in samples if s["done"] > 0]
    first = done[0]["rss_mb"] if done else float("nan")
    peak = max(s["rss_mb"] for s in done) if done else float("nan")
    last = done[-1]["rss_mb"] if done else float("nan")
    frames = len(answer["frames"])
    figures = {
        "clip_seconds": args.seconds,
        "clip_bytes": len(clip),
        "fps": args.fps,
        "sampled_frames": frames,
        "tracks": [{"id": t["id"], "frames": len(t["frames"])} for t in answer["tracks"]],
        "job_seconds": round(took, 1),
        "rss_mb_at_first_progress": round(first, 1),
        "rss_mb_peak_while_running": round(peak, 1),
        "rss_mb_at_last_progress": round(last, 1),
        "rss_growth_mb": round(peak - first, 1),
        "flat_within_100_mb": bool(peak - first <= 100),
        "samples": [{k: round(v, 2) for k, v in s.items()} for s in samples],
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    figures["where"] = "celery worker process tree" if args.worker else "embedded, in process"
    title = (
        f"{'worker' if args.worker else 'video job'} RSS: {args.seconds:g} s 720p clip, "
        f"fps {args.fps:g}, {frames} frames; "
        f"growth {peak - first:.0f} MiB"
    )
    plot(samples, RESULTS / f"{name}.png", title)
    save(name, figures)
    print(
        f"{frames} sampled frames in {took:.0f} s, tracks {figures['tracks']}; RSS "
        f"{first:.0f} MiB at the first progress, peak {peak:.0f}, last {last:.0f}: growth "
        f"{peak - first:.0f} MiB"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
