"""`fer-service torchserve` serves in the foreground, with the batching it is given, and
takes Java down with it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from service.launcher.config import free_ports

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
MODEL = "compact"


def ready(management_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{management_url}/models/{MODEL}", timeout=2) as resp:
            return any(w["status"] == "READY" for w in json.loads(resp.read())[0]["workers"])
    except OSError:
        return False


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "term"])
def test_cli_stops_torchserve_on_signal(
    sig: signal.Signals,
    model_store: Path,
    tmp_path: Path,
    processes_mentioning: Callable[[str], list[str]],
) -> None:
    ports = free_ports(5)
    workdir = tmp_path / "ts"
    cmd = [
        sys.executable,
        "-m",
        "service",
        "torchserve",
        "--model-store",
        str(model_store),
        "--config",
        str(REPO / "model_store" / "config.properties"),
        "--models",
        MODEL,
        "--port",
        str(ports[0]),
        "--management-port",
        str(ports[1]),
        "--metrics-port",
        str(ports[2]),
        "--grpc-ports",
        str(ports[3]),
        str(ports[4]),
        "--workdir",
        str(workdir),
        "--ready-timeout",
        "60",
        "--batching",
        "8:1",  # the CPU setting (docs/benchmarks.md) instead of the archive's 16:10
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("TS_")}
    log = open(tmp_path / "cli.log", "wb")  # noqa: SIM115 - closed in finally
    cli = subprocess.Popen(
        cmd,
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        # As from a terminal: a test run started in the background (`make test &`, CI
        # runners) inherits SIGINT ignored, and Ctrl-C would never reach the CLI.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    management = f"http://127.0.0.1:{ports[1]}"
    try:
        deadline = time.monotonic() + 60
        while not ready(management):
            assert cli.poll() is None, (tmp_path / "cli.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "TorchServe did not become ready"
            time.sleep(0.25)
        assert processes_mentioning(str(workdir)), "no Java process found for this instance"
        with urllib.request.urlopen(f"{management}/models/{MODEL}", timeout=5) as resp:
            (described,) = json.loads(resp.read())
        assert (described["batchSize"], described["maxBatchDelay"]) == (8, 1)

        cli.send_signal(sig)  # Ctrl-C reaches only the CLI: TorchServe has its own session
        # The CLI's own budget: a 30 s graceful stop, then SIGTERM (10 s) and SIGKILL (5 s).
        assert cli.wait(timeout=60) == 0
        assert not processes_mentioning(str(workdir))
    finally:
        if cli.poll() is None:
            cli.terminate()
            cli.wait(timeout=30)
        log.close()
