"""Faces per second through the serving handler, as the model server runs it, on this
machine's device (a GPU when torch sees one, else the CPU).

For every shipped classifier archive: the handler (`open_archive`, as TorchServe and the
embedded backend load it) is fed what the gateway sends, one request row holding a batch
of uint8 crops as a `.npy` tensor, at each batch size; the figure counts everything the
handler does (reading the tensor, normalising, the network with flip averaging, the
probabilities as JSON-able rows). The network alone (the handler's runner on a prepared
tensor) is measured beside it, so the handler's own overhead shows. A single face is
timed the same way (median latency).

    python -m bench.handler_speed [--batches 1 16 128 512 2048] [--seconds 3]

Saves `bench/results/handler_speed_<cpu|cuda>.json`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from typing import Any

import numpy as np
import torch

from bench.common import ROOT, save
from service.archive import open_archive
from service.wire import crops_tensor


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def rate(call: Any, device: torch.device, faces: int, seconds: float) -> tuple[float, float]:
    """(faces per second, median ms per call) of `call` over about `seconds`."""
    for _ in range(3):
        call()
    sync(device)
    times = []
    stop = time.perf_counter() + seconds
    while time.perf_counter() < stop or len(times) < 5:
        t = time.perf_counter()
        call()
        sync(device)
        times.append(time.perf_counter() - t)
    median = statistics.median(times)
    return faces / median, median * 1000


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batches", type=int, nargs="+", default=[1, 16, 128, 512, 2048])
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--models", nargs="+", default=["derl", "compact"])
    args = p.parse_args()
    gpu = 0 if torch.cuda.is_available() else None
    # as the gateway and bench/throughput's TorchServe run it (see FER_TORCH_THREADS)
    os.environ.setdefault("FER_TORCH_THREADS", "1")
    rows = []
    for name in args.models:
        loaded = open_archive(ROOT / "model_store" / f"{name}.mar", properties={"gpu_id": gpu})
        handler = loaded.handler
        device = handler.device
        size = handler.input_size
        rng = np.random.default_rng(0)
        for batch in args.batches:
            crops = rng.integers(0, 256, (batch, size, size), dtype=np.uint8)
            body = crops_tensor(list(crops))
            handled, handled_ms = rate(
                lambda body=body, h=handler, c=loaded.context: h.handle([{"body": body}], c),
                device,
                batch,
                args.seconds,
            )
            x = handler.batch(crops)
            both = torch.cat([x, x.flip(3)]) if handler.metadata.get("tta_flip") else x
            network, network_ms = rate(lambda both=both, h=handler: h.run(both), device, batch, 1.0)
            row = {
                "model": name,
                "engine": handler.engine,
                "device": str(device),
                "batch": batch,
                "handler_faces_per_s": round(handled),
                "handler_ms": round(handled_ms, 3),
                "network_faces_per_s": round(network),
                "network_ms": round(network_ms, 3),
            }
            rows.append(row)
            print(
                f"{name:8s} {handler.engine:5s} {str(device):6s} batch {batch:5d}: handler "
                f"{row['handler_faces_per_s']:>8,} faces/s ({handled_ms:7.2f} ms), network "
                f"{row['network_faces_per_s']:>8,} faces/s ({network_ms:7.2f} ms)"
            )
    kind = "cuda" if gpu is not None else "cpu"
    settings = {"batches": args.batches, "seconds": args.seconds, "flip_tta": "as archived"}
    print(f"saved {save(f'handler_speed_{kind}', {'settings': settings, 'rows': rows})}")


if __name__ == "__main__":
    main()
