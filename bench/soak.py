"""Soak test: `POST /classify` at half the measured capacity for a long time.

    python -m bench.soak                       # 10 minutes (the issue's run)
    python -m bench.soak --duration 120        # a short one

Starts `fer-service serve` (embedded backend), measures its capacity (requests per second
with `--concurrency` clients sending `multi_face.jpg` back to back for `--probe` seconds),
then sends requests at half that rate, on a fixed schedule (open loop: a slow answer does
not slow the sender), for `--duration` seconds. It samples the gateway's resident memory
(VmRSS) every 5 s and reports errors (any answer but 200, or none), latency, and whether
memory stays flat: the RSS slope over the second half of the run, in MB per minute.
Saves `bench/results/soak.json` with the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from pathlib import Path
from typing import Any

import httpx

from bench.common import ROOT, gateway_process, save

PHOTO = ROOT / "tests" / "data" / "multi_face.jpg"
SAMPLE_EVERY = 5.0


def rss_mb(pid: int) -> float:
    """Resident memory of a process, in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def slope_per_minute(samples: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, MB) samples, in MB per minute."""
    if len(samples) < 2:
        return 0.0
    xs, ys = [t for t, _ in samples], [m for _, m in samples]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    var = sum((x - mx) ** 2 for x in xs)
    return 60 * sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / var if var else 0.0


async def capacity(client: httpx.AsyncClient, url: str, concurrency: int, seconds: float) -> float:
    """Requests per second answered with `concurrency` clients back to back."""
    data = PHOTO.read_bytes()
    done = 0
    deadline = time.monotonic() + seconds

    async def client_loop() -> None:
        nonlocal done
        while time.monotonic() < deadline:
            r = await client.post(f"{url}/classify", files={"image": ("m.jpg", data)})
            r.raise_for_status()
            done += 1

    started = time.monotonic()
    await asyncio.gather(*(client_loop() for _ in range(concurrency)))
    return done / (time.monotonic() - started)


async def soak(
    client: httpx.AsyncClient, url: str, pid: int, rate: float, seconds: float
) -> dict[str, Any]:
    """Requests at `rate` per second for `seconds`; errors, latency and memory samples."""
    data = PHOTO.read_bytes()
    latencies: list[float] = []
    errors: dict[str, int] = {}
    memory: list[tuple[float, float]] = []
    tasks: set[asyncio.Task[None]] = set()

    async def one() -> None:
        t0 = time.perf_counter()
        try:
            r = await client.post(f"{url}/classify", files={"image": ("m.jpg", data)})
            status = str(r.status_code)
        except httpx.HTTPError as exc:
            status = type(exc).__name__
        if status == "200":
            latencies.append((time.perf_counter() - t0) * 1000)
        else:
            errors[status] = errors.get(status, 0) + 1

    started = time.monotonic()
    sent = 0
    next_sample = started
    while (now := time.monotonic()) < started + seconds:
        if now >= next_sample:
            memory.append((now - started, rss_mb(pid)))
            next_sample += SAMPLE_EVERY
        due = int((now - started) * rate) + 1
        while sent < due:
            task = asyncio.create_task(one())
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            sent += 1
        await asyncio.sleep(min(1 / rate, 0.05))
    await asyncio.gather(*tasks)
    memory.append((time.monotonic() - started, rss_mb(pid)))
    half = [s for s in memory if s[0] >= seconds / 2]
    ordered = sorted(latencies)
    return {
        "requests": sent,
        "ok": len(latencies),
        "errors": errors,
        "p50_ms": round(statistics.median(ordered), 1) if ordered else None,
        "p95_ms": round(ordered[int(0.95 * (len(ordered) - 1))], 1) if ordered else None,
        "rss_mb_start": round(memory[0][1], 1),
        "rss_mb_end": round(memory[-1][1], 1),
        "rss_mb_max": round(max(m for _, m in memory), 1),
        "rss_slope_mb_per_min_second_half": round(slope_per_minute(half), 2),
        "rss_samples": [(round(t, 1), round(m, 1)) for t, m in memory],
    }


async def run(url: str, pid: int, args: argparse.Namespace) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=60) as client:
        # Warm-up (the first requests load lazily-initialised pieces), then the capacity.
        await capacity(client, url, args.concurrency, 5)
        rps = await capacity(client, url, args.concurrency, args.probe)
        print(f"capacity: {rps:.1f} req/s at concurrency {args.concurrency}", flush=True)
        rate = rps / 2
        print(f"soaking at {rate:.1f} req/s for {args.duration:g} s", flush=True)
        figures = await soak(client, url, pid, rate, args.duration)
    return {"capacity_rps": round(rps, 2), "rate_rps": round(rate, 2), **figures}


def main(argv: list[str] | None = None) -> int:
    """Run the soak, print and save its figures; 1 if any request failed."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=600.0, help="seconds of soak")
    parser.add_argument("--probe", type=float, default=30.0, help="seconds of capacity probe")
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args(argv)
    with gateway_process({"FER_JOBS": "local", "FER_LOG_LEVEL": "warning"}) as server:
        figures = asyncio.run(run(server.url, server.process.pid, args))
    samples = figures.pop("rss_samples")
    print({k: v for k, v in figures.items()})
    settings = {
        "duration_s": args.duration,
        "probe_s": args.probe,
        "concurrency": args.concurrency,
        "photo": PHOTO.name,
        "backend": "local",
        "transport": "HTTP over loopback",
    }
    path = save("soak", {"settings": settings, "results": figures, "rss_samples": samples})
    print(f"saved {path}")
    return 0 if not figures["errors"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
