"""Shared helpers for benchmarks: machine description and result files."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import socket
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
