"""Serve a fer-service model store with MLServer (Open Inference Protocol v2).

    python deploy/mlserver/serve.py MODEL_STORE [--port 8080] [--venv DIR] [--models a b]

MLServer pins its own FastAPI and pydantic, so it lives in a virtualenv of its own
(`--venv`, created on first use with the pinned versions below; the gateway's venv is
untouched). The script writes an MLServer model repository (one folder per archive with a
`model-settings.json` naming `fer_runtime.ArchiveRuntime` and the `.mar`) and runs
`mlserver start` on it, with this checkout (and this folder) on `PYTHONPATH`, so the
archives are loaded by this checkout's `service.archive` and run by their own handlers.
The gateway then runs with `FER_BACKEND=oip FER_OIP_URL=http://127.0.0.1:<port>`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Sequence
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
#: What the MLServer venv holds (torch is the CPU build from this machine's disk).
PINS = (
    "mlserver==1.7.1",
    "torch==2.13.0",
    "numpy==2.4.6",
    "pillow==13.0.0",
    "onnx==1.23.2",
    "onnxruntime==1.32.0",
)
DEFAULT_VENV = Path.home() / ".cache" / "fer-service" / "mlserver-venv"


def ensure_venv(venv: Path) -> Path:
    """The venv's python, the venv created (or re-made when the pins changed) first."""
    python = venv / "bin" / "python"
    stamp = venv / "fer-pins.txt"
    wanted = "\n".join(PINS)
    if python.exists() and stamp.exists() and stamp.read_text() == wanted:
        return python
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
    pip = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, PINS[1]], check=True)  # torch first: the CPU wheel, not CUDA
    subprocess.run([*pip, *PINS], check=True)
    stamp.write_text(wanted)
    return python


def write_repository(
    store: Path,
    target: Path,
    port: int,
    models: Sequence[str] | None = None,
    grpc_port: int | None = None,
    metrics_port: int | None = None,
) -> list[str]:
    """An MLServer model repository in `target` for the archives of `store`; their names.
    HTTP on `port`, gRPC and metrics on the given ports (default: the next two)."""
    names = []
    for mar in sorted(store.glob("*.mar")):
        with zipfile.ZipFile(mar) as z:
            model = json.loads(z.read("MAR-INF/MANIFEST.json"))["model"]
        name = model["modelName"]
        if models and name not in models:
            continue
        settings = {
            "name": name,
            "implementation": "fer_runtime.ArchiveRuntime",
            "parameters": {"uri": str(mar.resolve()), "version": model.get("modelVersion", "")},
        }
        (target / name).mkdir(parents=True, exist_ok=True)
        (target / name / "model-settings.json").write_text(json.dumps(settings))
        names.append(name)
    server = {
        "host": "127.0.0.1",
        "http_port": port,
        "grpc_port": grpc_port or port + 1,
        "metrics_port": metrics_port or port + 2,
        "parallel_workers": 0,  # the models run in the server process (as one worker)
    }
    (target / "settings.json").write_text(json.dumps(server))
    return names


def command(python: Path, repository: Path) -> tuple[list[str], dict[str, str]]:
    """The `mlserver start` command line and its environment."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), str(HERE), env.get("PYTHONPATH", "")])
    env.setdefault("FER_TORCH_THREADS", "1")  # the networks run in ONNX Runtime on a CPU
    return [str(python.parent / "mlserver"), "start", str(repository)], env


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("store", type=Path)
    p.add_argument("--port", type=int, default=8080, help="HTTP port (gRPC +1, metrics +2)")
    p.add_argument("--venv", type=Path, default=DEFAULT_VENV)
    p.add_argument("--models", nargs="+")
    args = p.parse_args(argv)
    python = ensure_venv(args.venv)
    with tempfile.TemporaryDirectory(prefix="fer-mlserver-") as tmp:
        names = write_repository(args.store, Path(tmp), args.port, args.models)
        print(f"serving {names} on http://127.0.0.1:{args.port} (OIP v2)", flush=True)
        cmd, env = command(python, Path(tmp))
        return subprocess.call(cmd, env=env)


if __name__ == "__main__":
    raise SystemExit(main())
