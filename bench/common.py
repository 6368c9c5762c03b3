"""Shared helpers for benchmarks: machine description and result files."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from subprocess import Popen
from typing import Any
from urllib.parse import urlencode, urlsplit

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "git": _git_head(),
        # other work on the machine while measuring (1/5/15-minute load averages)
        "load_average": [round(v, 2) for v in os.getloadavg()],
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


def _git_head() -> str:
    """The commit measured ("" where the tree is a copy without git, e.g. a GPU machine)."""
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
    except OSError:
        return ""


def save(name: str, figures: dict[str, Any]) -> Path:
    """Write `bench/results/<name>.json` with the machine description; returns the path."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"machine": machine(), **figures}, indent=1) + "\n")
    return path


def free_port() -> int:
    """A free loopback port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class Gateway:
    """A gateway process started by `gateway_process`."""

    process: Popen[bytes]
    url: str


@contextlib.contextmanager
def gateway_process(env: dict[str, str], log: Path | None = None) -> Iterator[Gateway]:
    """`fer-service serve` on a free loopback port with `env` (FER_* settings) added to this
    environment, once it answers /readyz; stopped at the end of the block."""
    port = free_port()
    with contextlib.ExitStack() as stack:
        out = stack.enter_context(log.open("wb")) if log else subprocess.DEVNULL
        server = subprocess.Popen(
            [str(Path(sys.executable).parent / "fer-service"), "serve", "--port", str(port)],
            env={**os.environ, **env},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 120
            while not _answers(f"{url}/readyz"):
                if server.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"the gateway did not become ready (log: {log})")
                time.sleep(0.5)
            yield Gateway(server, url)
        finally:
            server.terminate()
            server.wait(timeout=30)


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def server_timing(header: str) -> dict[str, float]:
    """The gateway's `Server-Timing` header as {step: ms}."""
    out = {}
    for part in header.split(","):
        name, _, rest = part.strip().partition(";dur=")
        if rest:
            out[name] = float(rest)
    return out


class ClassifyClient:
    """`POST /classify` over one keep-alive HTTP/1.1 connection (the standard library's
    `http.client`), the photo as the request body with its `image/jpeg` type (one of the
    two forms the API takes; no multipart encoding), the reply parsed from JSON: the
    least a client can do, so that the figures are the gateway's. httpx with a multipart
    form costs about 1-3 ms more a request on this machine."""

    def __init__(self, url: str, params: dict[str, str] | None = None) -> None:
        parts = urlsplit(url)
        self.connection = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port)
        self.path = "/classify" + (f"?{urlencode(params)}" if params else "")

    def classify(self, data: bytes) -> tuple[dict[str, Any], dict[str, float]]:
        """The reply and the gateway's step timings (ms) for one photo."""
        self.connection.request(
            "POST", self.path, body=data, headers={"Content-Type": "image/jpeg"}
        )
        response = self.connection.getresponse()
        body = response.read()
        if response.status != 200:
            raise RuntimeError(f"/classify answered {response.status}: {body[:300]!r}")
        return json.loads(body), server_timing(response.getheader("server-timing") or "")

    def close(self) -> None:
        self.connection.close()


def time_photos(
    url: str, photos: dict[str, bytes], n: int, params: dict[str, str] | None = None
) -> dict[str, Any]:
    """Each photo sent `n` times in a row after one warm-up (`ClassifyClient`): end-to-end
    p50 / p95 ms, the median of each gateway step, and the last reply's faces."""
    client = ClassifyClient(url, params)
    results: dict[str, Any] = {}
    try:
        for name, data in photos.items():
            client.classify(data)  # warm-up
            lat, steps = [], []
            for _ in range(n):
                t = time.perf_counter()
                reply, timing = client.classify(data)
                lat.append((time.perf_counter() - t) * 1000)
                steps.append(timing)
            step_names = sorted({k for s in steps for k in s})
            faces = reply["faces"]
            results[name] = {
                "faces": len(faces),
                "p50_ms": statistics.median(lat),
                "p95_ms": percentile(lat, 0.95),
                "server_timing_median_ms": {
                    k: statistics.median([s.get(k, 0.0) for s in steps]) for k in step_names
                },
                "boxes": [
                    [round(f["box"][k]) for k in ("x", "y", "width", "height")] for f in faces
                ],
                "expressions": [f["expression"] for f in faces],
            }
    finally:
        client.close()
    return results
