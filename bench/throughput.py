"""Throughput of `POST /classify` at 1/4/8/16 clients, embedded and through TorchServe; the
gateway's hop over direct TorchServe; the memory (RSS) of every process.

Each client is closed-loop (sends its next photo when the answer to its last arrives) for
`--seconds` after a warm-up; one-face photos (astronaut, grace_hopper) alternate. Modes:
- `embedded`: `fer-service serve` with the local backend (the archives' handlers in the
  gateway process);
- `torchserve`: a TorchServe started here (`service.launcher`, the repository's model
  store and config, CPU) and a gateway with `FER_BACKEND=torchserve` in front of it.
The hop: the same photo's face crops posted as the gateway posts them (one `.npy` tensor
to `/predictions/<model>`), sequentially, straight to TorchServe from this process,
against the gateway's own `classify` step (Server-Timing) for the same photo through the
gateway: what the gateway adds on its way to the model server.

    python -m bench.throughput [--seconds 10] [--clients 1 4 8 16] [--modes embedded torchserve]

Saves `bench/results/throughput.json`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from bench.common import ROOT, gateway_process, percentile, save, server_timing

PHOTOS = ("astronaut.jpg", "grace_hopper.jpg")


def rss_mb(pid: int) -> float:
    """Resident memory of process `pid` in MB (0 if it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def group_rss(pgid: int) -> dict[str, float]:
    """RSS by command of every process in process group `pgid` (TorchServe: the launcher,
    the Java frontend and its Python workers)."""
    out: dict[str, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.getpgid(int(entry.name)) != pgid:
                continue
            cmd = (entry / "cmdline").read_bytes().split(b"\0")
        except (OSError, ProcessLookupError):
            continue
        name = "java" if b"java" in cmd[0] else Path(cmd[0].decode()).name
        if any(b"model_service_worker" in c for c in cmd):
            name = "python worker"
        key = name
        i = 2
        while key in out:
            key, i = f"{name} {i}", i + 1
        out[key] = round(rss_mb(int(entry.name)), 1)
    return out


async def load(url: str, photos: list[bytes], clients: int, seconds: float) -> dict[str, Any]:
    """`clients` closed-loop clients for `seconds`: images/s and latency percentiles."""
    latencies: list[float] = []
    stop = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:

        async def worker(k: int) -> None:
            i = k
            while time.perf_counter() < stop:
                data = photos[i % len(photos)]
                t = time.perf_counter()
                r = await client.post(f"{url}/classify", files={"image": ("p.jpg", data)})
                r.raise_for_status()
                latencies.append((time.perf_counter() - t) * 1000)
                i += 1

        # warm-up: every connection once
        await asyncio.gather(
            *(
                client.post(f"{url}/classify", files={"image": ("p.jpg", photos[0])})
                for _ in range(clients)
            )
        )
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(k) for k in range(clients)))
        wall = time.perf_counter() - t0
    return {
        "clients": clients,
        "requests": len(latencies),
        "images_per_s": round(len(latencies) / wall, 1),
        "p50_ms": round(statistics.median(latencies), 2),
        "p95_ms": round(percentile(latencies, 0.95), 2),
    }


def crops_body(photo: bytes, model: str) -> bytes:
    """The photo's crops exactly as the gateway sends them to TorchServe."""
    from service.catalog import ModelStore
    from service.faces import RetinaFaceDetector
    from service.pipeline import FacePipeline
    from service.settings import Settings
    from service.wire import predict_request

    settings = Settings()
    entry = ModelStore.from_settings(settings).classifier(model or None)
    pipeline = FacePipeline.from_settings(settings, RetinaFaceDetector.from_settings(settings))
    analysis = pipeline.analyse(photo, entry.input, settings.max_faces)
    return predict_request(analysis.crops)[0]


async def hop(gateway: str, torchserve: str, model: str, photo: bytes, n: int) -> dict[str, Any]:
    """p50 of the gateway's classify step vs the same crops posted to TorchServe directly."""
    body = crops_body(photo, model)
    direct, via = [], []
    async with httpx.AsyncClient(timeout=60) as client:
        url = f"{torchserve}/predictions/{model}"
        headers = {"Content-Type": "application/x-npy"}
        for _ in range(3):
            (await client.post(url, content=body, headers=headers)).raise_for_status()
            await client.post(f"{gateway}/classify", files={"image": ("p.jpg", photo)})
        for _ in range(n):
            t = time.perf_counter()
            (await client.post(url, content=body, headers=headers)).raise_for_status()
            direct.append((time.perf_counter() - t) * 1000)
        for _ in range(n):
            r = await client.post(f"{gateway}/classify", files={"image": ("p.jpg", photo)})
            r.raise_for_status()
            via.append(server_timing(r.headers["server-timing"])["classify"])
    d, v = statistics.median(direct), statistics.median(via)
    return {
        "model": model,
        "n": n,
        "direct_torchserve_p50_ms": round(d, 2),
        "gateway_classify_step_p50_ms": round(v, 2),
        "hop_p50_ms": round(v - d, 2),
    }


@contextlib.contextmanager
def torchserve_process(models: list[str], batching: tuple[int, int] | None = None) -> Iterator[Any]:
    """A TorchServe on free loopback ports serving `models` from the repository's store,
    with `batching` (batch size, max batch delay in ms) instead of the archives' own."""
    from service.launcher.config import CONFIG_NAME, free_ports, local_config
    from service.launcher.process import TorchServe

    store = ROOT / "model_store"
    cfg = local_config(
        store, store / CONFIG_NAME, models=models, ports=free_ports(5), batching=batching
    )
    cfg.number_of_gpu = 0
    env = {k: v for k, v in os.environ.items() if not k.startswith("TS_")}
    env.setdefault("FER_TORCH_THREADS", "1")  # as the gateway's default (see settings)
    with tempfile.TemporaryDirectory(prefix="fer-bench-ts-") as tmp:
        server = TorchServe(cfg, workdir=Path(tmp), env=env)
        server.start()
        try:
            server.wait_ready(timeout=180)
            yield server
        finally:
            server.stop()


def run_mode(
    mode: str, env: dict[str, str], clients: list[int], seconds: float, pgid: int | None
) -> dict[str, Any]:
    photos = [(ROOT / "tests" / "data" / p).read_bytes() for p in PHOTOS]
    rows = []
    with gateway_process({"FER_JOBS": "local", **env}) as gw:
        for c in clients:
            row = asyncio.run(load(gw.url, photos, c, seconds))
            row["rss_mb"] = {"gateway": round(rss_mb(gw.process.pid), 1)}
            if pgid is not None:
                row["rss_mb"].update(group_rss(pgid))
            rows.append(row)
            print(
                f"{mode:<30} {c:>3} clients: {row['images_per_s']:7.1f} images/s, "
                f"p50 {row['p50_ms']:7.1f} ms, p95 {row['p95_ms']:7.1f} ms, RSS {row['rss_mb']}"
            )
    return {"mode": mode, "rows": rows}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--clients", type=int, nargs="+", default=[1, 4, 8, 16])
    p.add_argument("--modes", nargs="+", default=["embedded", "torchserve"])
    p.add_argument("--model", default="derl", help="the classifier (the default model)")
    p.add_argument("--hop-n", type=int, default=50)
    p.add_argument(
        "--batching",
        nargs="+",
        default=["archive"],
        help="TorchServe batch settings to compare, each SIZE:DELAY_MS or `archive` (the "
        "archive's own model-config.yaml)",
    )
    args = p.parse_args()
    env = {"FER_DEFAULT_MODEL": args.model} if args.model else {}
    results: list[dict[str, Any]] = []
    hop_result = None
    if "embedded" in args.modes:
        results.append(run_mode("embedded", env, args.clients, args.seconds, None))
    if "torchserve" in args.modes:
        for batching in args.batching:
            size_delay = None
            if batching != "archive":
                size, delay = batching.split(":")
                size_delay = (int(size), int(delay))
            with torchserve_process([args.model], size_delay) as ts:
                ts_env = {
                    **env,
                    "FER_BACKEND": "torchserve",
                    "FER_TORCHSERVE_URL": ts.inference_url,
                    "FER_TORCHSERVE_MANAGEMENT_URL": ts.management_url,
                }
                assert ts.process is not None
                pgid = os.getpgid(ts.process.pid)
                mode = f"torchserve batching={batching}"
                results.append(run_mode(mode, ts_env, args.clients, args.seconds, pgid))
                if hop_result is None:  # the hop: with the first batching only
                    with gateway_process({"FER_JOBS": "local", **ts_env}) as gw:
                        photo = (ROOT / "tests" / "data" / PHOTOS[0]).read_bytes()
                        hop_result = asyncio.run(
                            hop(gw.url, ts.inference_url, args.model, photo, args.hop_n)
                        )
                        hop_result["batching"] = batching
                    print(
                        f"gateway hop ({PHOTOS[0]}, {args.model}): classify step "
                        f"{hop_result['gateway_classify_step_p50_ms']} ms vs direct TorchServe "
                        f"{hop_result['direct_torchserve_p50_ms']} ms p50: "
                        f"{hop_result['hop_p50_ms']} ms"
                    )
    settings = {
        "seconds": args.seconds,
        "clients": args.clients,
        "photos": list(PHOTOS),
        "model": args.model,
        "client": "httpx.AsyncClient in one process, closed loop, loopback",
    }
    path = save("throughput", {"settings": settings, "results": results, "hop": hop_result})
    print(f"saved {path}")


if __name__ == "__main__":
    main()
