"""The schema fuzzing pass of `make test`: schemathesis (`bench/fuzz.py`, a short budget)
against the live app, with an API key, a classifier and the test tdgan and frontalizer. No
server error and no schema violation may come back; `python -m bench.fuzz` is the long run."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from service.app import create_app
from service.settings import DEFAULT_MODEL_STORE, Settings

REPO = Path(__file__).resolve().parents[2]
KEY = "fuzzing-key"


def test_schemathesis_finds_nothing(
    transfer_store: Callable[[float], Path], frontalize_store: Path, tmp_path: Path, serve
) -> None:
    store = tmp_path / "store"
    store.mkdir()
    shutil.copy(DEFAULT_MODEL_STORE / "compact.mar", store)
    shutil.copy(transfer_store(0.0) / "tdgan.mar", store)
    shutil.copy(frontalize_store / "frontalize.mar", store)
    settings = Settings(model_store=store, api_keys=[KEY])  # type: ignore[arg-type]
    with serve(create_app(settings)) as url:
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "bench.fuzz",
                "--url",
                url,
                "--api-key",
                KEY,
                "--max-examples",
                "3",
                "--min-requests",
                "1",
                "--no-save",
            ],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=600,
        )
    print(done.stdout[-3000:])
    assert done.returncode == 0, done.stdout[-5000:] + done.stderr[-3000:]
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    assert figures["schemathesis_failures"] == {} and figures["schemathesis_errors"] == 0
    assert figures["server_errors_5xx"] == 0
    assert figures["requests"] >= 100
    assert figures["by_status"].get("200", 0) > 0
