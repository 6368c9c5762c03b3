"""Latency of `POST /classify` over real HTTP against a gateway started for the purpose.

Starts `fer-service serve` (embedded backend unless `--backend torchserve` with a running
TorchServe) on a free loopback port, sends each test photo `--n` times (sequentially over one
keep-alive connection as `bench.common.ClassifyClient` does, then `multi_face`
`--concurrency` at a time) and reports p50/p95 end-to-end latency and the gateway's own
step timings (`Server-Timing`: decode, detect, align, classify). Saves
`bench/results/latency.json`.

    python -m bench.latency [--n 30] [--concurrency 4] [--model compact]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

import httpx

from bench.common import ROOT, gateway_process, percentile, save, time_photos

PHOTOS = ["astronaut.jpg", "grace_hopper.jpg", "multi_face.jpg", "no_face.jpg"]


async def run(url: str, photos: dict[str, bytes], n: int, concurrency: int, model: str) -> dict:
    params = {"model": model} if model else {}
    # Sequential: one keep-alive connection, the photo as the body (bench.common).
    results: dict[str, dict] = await asyncio.to_thread(time_photos, url, photos, n, params)
    async with httpx.AsyncClient(timeout=60) as client:
        data = photos["multi_face.jpg"]
        sem = asyncio.Semaphore(concurrency)

        async def one() -> float:
            async with sem:
                t = time.perf_counter()
                r = await client.post(
                    f"{url}/classify", params=params, files={"image": ("m.jpg", data)}
                )
                r.raise_for_status()
                return (time.perf_counter() - t) * 1000

        t0 = time.perf_counter()
        lat = await asyncio.gather(*(one() for _ in range(n)))
        wall = time.perf_counter() - t0
        results["concurrent_multi_face"] = {
            "concurrency": concurrency,
            "requests": n,
            "throughput_rps": n / wall,
            "p50_ms": statistics.median(lat),
            "p95_ms": percentile(list(lat), 0.95),
        }
    return results


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--n", type=int, default=30)
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--model", default="")
    p.add_argument("--backend", default="local", choices=["local", "torchserve"])
    args = p.parse_args()
    photos = {name: (ROOT / "tests" / "data" / name).read_bytes() for name in PHOTOS}
    env = {"FER_BACKEND": args.backend, "FER_JOBS": "local"}
    with gateway_process(env) as server:
        results = asyncio.run(run(server.url, photos, args.n, args.concurrency, args.model))
    print(f"{'photo':<24}{'faces':>6}{'p50 ms':>9}{'p95 ms':>9}  server steps (median ms)")
    for name, r in results.items():
        if name.startswith("concurrent"):
            continue
        steps = " ".join(f"{k}={v:.1f}" for k, v in r["server_timing_median_ms"].items())
        print(f"{name:<24}{r['faces']:>6}{r['p50_ms']:>9.1f}{r['p95_ms']:>9.1f}  {steps}")
    c = results["concurrent_multi_face"]
    print(
        f"multi_face x{c['requests']} at concurrency {c['concurrency']}: "
        f"{c['throughput_rps']:.1f} req/s, p50 {c['p50_ms']:.1f} ms, p95 {c['p95_ms']:.1f} ms"
    )
    settings = {
        "backend": args.backend,
        "n": args.n,
        "concurrency": args.concurrency,
        "model": args.model or "default",
        "transport": "HTTP over loopback",
        "client": "sequential: http.client, one keep-alive connection, the photo as an "
        "image/jpeg body; concurrent: httpx.AsyncClient, multipart form",
    }
    print(f"saved {save('latency', {'settings': settings, 'results': results})}")


if __name__ == "__main__":
    main()
