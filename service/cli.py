"""`fer-service`: the serving command line.

One function per command, each registered by an `add_<command>(subparsers)` function in
`COMMANDS`. To add a command, write `add_<name>(subparsers)` that adds its parser and
sets `func=` to a function taking the parsed `argparse.Namespace` and returning the exit
code, and append it to `COMMANDS` (it may live in its own module).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from service.commands import Subparsers, add_classify, add_frontalize, add_transfer, add_video


def cmd_serve(args: argparse.Namespace) -> int:
    """Run the gateway under uvicorn."""
    import uvicorn

    from service.app import create_app
    from service.settings import Settings

    overrides: dict[str, Any] = {}
    if args.backend:
        overrides["backend"] = args.backend
    if args.model_store:
        overrides["model_store"] = args.model_store
    settings = Settings(**overrides)
    level = settings.log_level.upper()
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    uvicorn.run(
        create_app(settings),
        host=args.host,
        port=args.port,
        log_level=settings.log_level,
        proxy_headers=True,
    )
    return 0


def add_serve(subparsers: Subparsers) -> None:
    p = subparsers.add_parser(
        "serve",
        help="run the HTTP gateway",
        description="Serve the REST API. Every FER_* environment variable applies "
        "(docs/api.md); the flags below override them.",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port to bind (default 8000)")
    p.add_argument(
        "--backend",
        choices=["local", "torchserve", "oip"],
        help="where models run (default: FER_BACKEND, else local)",
    )
    p.add_argument("--model-store", type=Path, help="folder of .mar files (FER_MODEL_STORE)")
    p.set_defaults(func=cmd_serve)


def openapi_yaml() -> str:
    """The app's OpenAPI document as YAML (what openapi.yaml must contain)."""
    import yaml

    from service.app import create_app
    from service.settings import Settings

    class Dumper(yaml.SafeDumper):
        def ignore_aliases(self, data: Any) -> bool:  # repeated parts written out in full
            return True

    spec = create_app(Settings()).openapi()
    return yaml.dump(spec, Dumper=Dumper, sort_keys=False, allow_unicode=True, width=100)


def cmd_openapi(args: argparse.Namespace) -> int:
    """Print the OpenAPI document, or write it to `--out`."""
    text = openapi_yaml()
    if args.out:
        Path(args.out).write_text(text)
    else:
        sys.stdout.write(text)
    return 0


def add_openapi(subparsers: Subparsers) -> None:
    p = subparsers.add_parser(
        "openapi", help="print the OpenAPI document (YAML)", description=cmd_openapi.__doc__
    )
    p.add_argument("--out", "-o", type=Path, help="write to this file instead of stdout")
    p.set_defaults(func=cmd_openapi)


def _batching(text: str) -> tuple[int, int]:
    """`SIZE:DELAY_MS` -> (batch size >= 1, delay >= 0 ms)."""
    size, sep, delay = text.partition(":")
    try:
        pair = int(size), int(delay)
    except ValueError:
        pair = (0, -1)
    if not sep or pair[0] < 1 or pair[1] < 0:
        raise argparse.ArgumentTypeError(f"expected SIZE:DELAY_MS such as 8:1, got {text!r}")
    return pair


def cmd_torchserve(args: argparse.Namespace) -> int:
    """Run TorchServe in the foreground over the model store; Ctrl-C/TERM stops it."""
    from service.launcher.config import CONFIG_NAME, local_config
    from service.launcher.process import TorchServe, run_foreground
    from service.settings import Settings

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # mypy (without the pydantic plugin) does not see that every field has a default.
    settings = Settings()  # type: ignore[call-arg]
    store = args.model_store or settings.model_store
    cfg = local_config(
        store,
        args.config or store / CONFIG_NAME,
        models=args.models or settings.models,
        host=args.host,
        ports=[
            args.port or settings.torchserve_url.port or 8080,
            args.management_port or settings.torchserve_management_url.port or 8081,
            args.metrics_port,
            *args.grpc_ports,
        ],
        workers=args.workers,
        batching=args.batching,
    )
    server = TorchServe(cfg, workdir=args.workdir, output=sys.stdout)
    return run_foreground(server, ready_timeout=args.ready_timeout)


def add_torchserve(subparsers: Subparsers) -> None:
    p = subparsers.add_parser(
        "torchserve",
        help="run TorchServe over the model store (then: FER_BACKEND=torchserve serve)",
        description="Start a local TorchServe with the model store's config.properties, "
        "wait until every model has a READY worker and stay in the foreground; Ctrl-C or "
        "SIGTERM stops it, Java frontend and workers included. The model store, the models "
        "and the inference/management ports default to the gateway's FER_MODEL_STORE, "
        "FER_MODELS, FER_TORCHSERVE_URL and FER_TORCHSERVE_MANAGEMENT_URL, so that "
        "`FER_BACKEND=torchserve fer-service serve` finds it.",
    )
    p.add_argument("--model-store", type=Path, help="folder of .mar files (FER_MODEL_STORE)")
    p.add_argument(
        "--config", type=Path, help="base config.properties (default: the model store's)"
    )
    p.add_argument(
        "--models", nargs="+", help="model names to load (default: FER_MODELS, else all)"
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="inference port (default: FER_TORCHSERVE_URL's, 8080)")
    p.add_argument("--management-port", type=int, help="management port (default 8081)")
    p.add_argument("--metrics-port", type=int, default=8082, help="Prometheus port (default 8082)")
    p.add_argument(
        "--grpc-ports",
        type=int,
        nargs=2,
        default=[7070, 7071],
        metavar=("INFERENCE", "MANAGEMENT"),
        help="TorchServe's gRPC ports (default 7070 7071)",
    )
    p.add_argument("--workers", type=int, help="workers per model (default: each archive's)")
    p.add_argument(
        "--batching",
        type=_batching,
        metavar="SIZE:DELAY_MS",
        help="dynamic batching of every model: batch size and maximum batch delay in ms "
        "(default: each archive's, 16:10, chosen for a GPU; 8:1 serves more on a CPU host)",
    )
    p.add_argument(
        "--ready-timeout", type=float, default=180.0, help="seconds to wait for the workers"
    )
    p.add_argument(
        "--workdir",
        type=Path,
        help="folder for TorchServe's config, temp files and logs (default: a temporary "
        "folder, removed on exit)",
    )
    p.set_defaults(func=cmd_torchserve)


def cmd_worker(args: argparse.Namespace) -> int:
    """Run a Celery worker of the job queue (what `FER_JOBS=celery` gateways submit to)."""
    from service.worker import app, settings

    argv = ["worker", "--concurrency", str(args.concurrency), "--pool", args.pool]
    argv += ["--loglevel", (args.loglevel or settings.log_level).upper()]
    if args.hostname:
        argv += ["--hostname", args.hostname]
    app.worker_main(argv)
    return 0


def add_worker(subparsers: Subparsers) -> None:
    p = subparsers.add_parser(
        "worker",
        help="run a job worker (Celery, Redis at FER_REDIS_URL)",
        description="Run queued jobs (/transfer) from the Redis at FER_REDIS_URL until "
        "SIGTERM (which lets the running job finish) or Ctrl-C. Every FER_* setting applies: "
        "FER_BACKEND says where the models run, FER_MODEL_STORE where the archives are. "
        "The same as `celery --app service.worker worker`.",
    )
    p.add_argument(
        "--concurrency",
        type=int,
        default=1,
        help="jobs run at once, one process each (default 1: a model instance per job)",
    )
    p.add_argument(
        "--pool",
        choices=["prefork", "solo", "threads"],
        default="prefork",
        help="Celery pool (default prefork: a job whose process dies is given back)",
    )
    p.add_argument(
        "--loglevel",
        choices=["debug", "info", "warning", "error"],
        help="default: FER_LOG_LEVEL, else info",
    )
    p.add_argument("--hostname", help="worker name (default celery@<host name>)")
    p.set_defaults(func=cmd_worker)


# -- commands for people who use the service (service/client.py) -------------------------


#: Every command's registration function, in the order `--help` lists them.
COMMANDS: list[Callable[[Subparsers], None]] = [
    add_serve,
    add_openapi,
    add_torchserve,
    add_worker,
    add_classify,
    add_video,
    add_transfer,
    add_frontalize,
]


def build_parser() -> argparse.ArgumentParser:
    """The `fer-service` parser with every command of `COMMANDS`."""
    parser = argparse.ArgumentParser(
        prog="fer-service", description="Facial expression recognition REST service."
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in COMMANDS:
        add(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `fer-service` console script."""
    args = build_parser().parse_args(argv)
    return int(args.func(args))
