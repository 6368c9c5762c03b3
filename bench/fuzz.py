"""Fuzz the gateway against its own OpenAPI schema with schemathesis (`st run`).

    python -m bench.fuzz                          # a gateway of its own, >= 5,000 requests
    python -m bench.fuzz --url http://host:8000 --max-examples 3 --no-save   # a live one

Without `--url` it starts `fer-service serve` on a free port over a model store made of the
repository's archives plus the tiny test `tdgan` and `frontalize` (tests/conftest.py), so
that /transfer, /frontalize and the job routes run for real. schemathesis generates
requests from the schema (examples, coverage of every parameter and body, random fuzzing,
stateful sequences that follow a job's links) and checks every answer: no server error,
status codes, content types, headers and bodies as the schema says. The requests are
counted by the gateway itself (`fer_requests_total` of /metrics, before and after), and the
run fails unless there is no server error and no schema violation. `--min-requests` repeats
the run with new seeds until that many requests were sent.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.common import ROOT, gateway_process, save

#: What every answer must satisfy: no 5xx, the status, content type, headers and body that
#: the schema documents for it, and a 405 (with the right `Allow`) for undocumented methods.
CHECKS = (
    "not_a_server_error",
    "unsupported_method",
    "allow_header_conformance",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
)


def requests_served(url: str, headers: dict[str, str]) -> dict[str, float]:
    """The gateway's own count of answered requests by status (from /metrics)."""
    from prometheus_client.parser import text_string_to_metric_families

    request = urllib.request.Request(f"{url}/metrics", headers=headers)
    with urllib.request.urlopen(request, timeout=30) as response:
        text = response.read().decode()
    counts: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "fer_requests_total" and sample.labels["route"] != "/metrics":
                status = sample.labels["status"]
                counts[status] = counts.get(status, 0.0) + sample.value
    return counts


def run_schemathesis(
    url: str, max_examples: int, seed: int, workers: int, headers: dict[str, str]
) -> dict[str, Any]:
    """One `st run` against `url`; its JSON report (failures by kind, test cases)."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        cmd = [
            str(Path(sys.executable).with_name("st")),
            "run",
            f"{url}/openapi.json",
            "--checks",
            ",".join(CHECKS),
            "--max-examples",
            str(max_examples),
            "--seed",
            str(seed),
            "--workers",
            str(workers),
            "--no-color",
            "--generation-database",
            "none",
            "--report",
            "json",
            "--report-json-path",
            str(report),
        ]
        for name, value in headers.items():
            cmd += ["--header", f"{name}: {value}"]
        completed = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True)
        if not report.exists():
            raise RuntimeError(f"schemathesis wrote no report:\n{completed.stdout[-3000:]}")
        result: dict[str, Any] = json.loads(report.read_text())
        result["output_tail"] = completed.stdout[-4000:]
        return result


def fuzz(
    url: str,
    max_examples: int,
    min_requests: int,
    workers: int,
    headers: dict[str, str],
    seed: int = 1,
) -> dict[str, Any]:
    """Run schemathesis (again, with the next seed, until `min_requests` were answered);
    the figures of the whole run."""
    before = requests_served(url, headers)
    started = time.monotonic()
    runs: list[dict[str, Any]] = []
    failures: dict[str, int] = {}
    errors = 0
    sent = 0.0
    while not runs or sent < min_requests:
        report = run_schemathesis(url, max_examples, seed + len(runs), workers, headers)
        for failure in report["failures"]:
            failures[failure["title"]] = failures.get(failure["title"], 0) + failure["count"]
        errors += len(report["errors"])
        after = requests_served(url, headers)
        sent = sum(after.values()) - sum(before.values())
        runs.append({"seed": report["seed"], "test_cases": report["test_cases"]["generated"]})
        print(
            f"run {len(runs)}: {report['test_cases']['generated']} test cases, "
            f"{sent:.0f} requests so far, failures {failures or 'none'}",
            flush=True,
        )
        if failures or errors:
            print(report["output_tail"], flush=True)
            break
    statuses = {
        status: int(count - before.get(status, 0.0))
        for status, count in sorted(after.items())
        if count - before.get(status, 0.0) > 0
    }
    server_errors = sum(n for status, n in statuses.items() if status.startswith("5"))
    return {
        "requests": int(sent),
        "by_status": statuses,
        "server_errors_5xx": server_errors,
        "internal_errors_500": statuses.get("500", 0),
        "schemathesis_failures": failures,
        "schemathesis_errors": errors,
        "checks": list(CHECKS),
        "max_examples": max_examples,
        "runs": runs,
        "seconds": round(time.monotonic() - started, 1),
    }


@contextlib.contextmanager
def gateway(workdir: Path) -> Iterator[str]:
    """`fer-service serve` over the repository's archives and the test tdgan and
    frontalizer."""
    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import export_tiny_frontalize, export_tiny_transfer  # the tests' archives

    store = workdir / "store"
    store.mkdir()
    for archive in (ROOT / "model_store").glob("*.mar"):
        shutil.copy(archive, store / archive.name)
    export_tiny_transfer(store)
    export_tiny_frontalize(store)
    env = {"FER_MODEL_STORE": str(store), "FER_LOG_LEVEL": "warning"}
    with gateway_process(env, workdir / "gateway.log") as server:
        yield server.url


def main(argv: list[str] | None = None) -> int:
    """Fuzz, print the figures, save them (bench/results/fuzz.json); 1 on any failure."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="a running gateway (default: start one)")
    parser.add_argument("--max-examples", type=int, default=60, help="per operation and run")
    parser.add_argument("--min-requests", type=int, default=5000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--api-key", help="sent as `Authorization: Bearer` when set")
    parser.add_argument("--no-save", action="store_true", help="do not write bench/results")
    args = parser.parse_args(argv)
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}

    def go(url: str) -> dict[str, Any]:
        return fuzz(url, args.max_examples, args.min_requests, args.workers, headers)

    if args.url:
        figures = go(args.url.rstrip("/"))
    else:
        with tempfile.TemporaryDirectory() as tmp, gateway(Path(tmp)) as url:
            figures = go(url)
    print(json.dumps(figures))
    if not args.no_save:
        print(f"saved {save('fuzz', figures)}")
    ok = not figures["schemathesis_failures"] and not figures["schemathesis_errors"]
    return 0 if ok and figures["server_errors_5xx"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
