"""The configuration of a local TorchServe: what it serves, where it listens, and the
`config.properties` it is started with (service/launcher/process.py starts it).

Per-model settings: every fer-service archive carries a `model-config.yaml` (workers,
batch size, batch delay, response timeout), and TorchServe 0.12 lets those values win over
`config.properties` and over `initial_workers` at registration. `ModelSettings` overrides
are therefore applied through the management API: a model with batching overrides is
registered with explicit `batch_size`/`max_batch_delay`/`response_timeout`, and its workers
are scaled with `PUT /models/<name>?min_worker=&max_worker=` once it is up. Registering
needs TorchServe's model control API, which is enabled only for an instance that has such
overrides.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from service.handlers.layout import MANIFEST

log = logging.getLogger(__name__)

#: The project's TorchServe configuration (production / compose) lives in the model store
#: under this name, next to the archives it serves.
CONFIG_NAME = "config.properties"


class TorchServeError(RuntimeError):
    """TorchServe could not be started, did not become ready, or died."""


@dataclass(frozen=True)
class ModelSettings:
    """Serving settings of one model; `None` keeps what the archive's model-config.yaml says."""

    workers: int | None = None
    batch_size: int | None = None
    max_batch_delay_ms: int | None = None
    response_timeout_s: int | None = None

    @property
    def overrides_batching(self) -> bool:
        """True when the model must be registered through the API to take these values."""
        return any(
            v is not None
            for v in (self.batch_size, self.max_batch_delay_ms, self.response_timeout_s)
        )


@dataclass
class TorchServeConfig:
    """What a local TorchServe instance serves and where it listens.

    `base` holds properties read from a `config.properties` (see `read_properties`); the
    fields here override them. `models` maps model names to archive file names in the
    store; `None` loads every archive of the store (`load_models=all`).
    """

    model_store: Path
    models: Mapping[str, str] | None = None
    host: str = "127.0.0.1"
    inference_port: int = 8080
    management_port: int = 8081
    metrics_port: int = 8082
    grpc_inference_port: int = 7070
    grpc_management_port: int = 7071
    default_workers: int | None = None
    job_queue_size: int | None = None
    response_timeout_s: int | None = None
    number_of_gpu: int | None = None
    settings: Mapping[str, ModelSettings] = field(default_factory=dict)
    base: Mapping[str, str] = field(default_factory=dict)

    @property
    def inference_url(self) -> str:
        """Base URL of the inference API (`/predictions/<model>`)."""
        return f"http://{_url_host(self.host)}:{self.inference_port}"

    @property
    def management_url(self) -> str:
        """Base URL of the management API (`/models/<model>`)."""
        return f"http://{_url_host(self.host)}:{self.management_port}"

    @property
    def metrics_url(self) -> str:
        """Base URL of the metrics endpoint (`/metrics`)."""
        return f"http://{_url_host(self.host)}:{self.metrics_port}"

    def archives(self) -> dict[str, str]:
        """Model name -> archive file of every model this instance serves."""
        if self.models is not None:
            return dict(self.models)
        return {archive_model_name(p): p.name for p in sorted(self.model_store.glob("*.mar"))}

    def startup_models(self) -> dict[str, str]:
        """The models TorchServe loads itself at startup (the others go through the API)."""
        return {
            name: mar
            for name, mar in self.archives().items()
            if not self.settings.get(name, ModelSettings()).overrides_batching
        }

    def properties(self) -> dict[str, str]:
        """The `config.properties` entries of this instance."""
        props = dict(self.base)
        startup = self.startup_models()
        if self.models is None and len(startup) == len(self.archives()):
            load = "all"
        else:
            load = ",".join(f"{name}={mar}" for name, mar in startup.items())
        bind = f"http://{_bind_host(self.host)}"
        props.update(
            {
                "inference_address": f"{bind}:{self.inference_port}",
                "management_address": f"{bind}:{self.management_port}",
                "metrics_address": f"{bind}:{self.metrics_port}",
                "grpc_inference_address": self.host,
                "grpc_management_address": self.host,
                "grpc_inference_port": str(self.grpc_inference_port),
                "grpc_management_port": str(self.grpc_management_port),
                "model_store": str(self.model_store.resolve()),
                "load_models": load,
                "metrics_mode": "prometheus",
                "enable_envvars_config": "true",
                "install_py_dep_per_model": "false",
            }
        )
        if load == "":
            del props["load_models"]
        if len(startup) < len(self.archives()):
            # Registering through the API (to override an archive's batching) needs the
            # model control API, off by default since 0.12; only on the ports we bind.
            props["enable_model_api"] = "true"
        if _is_loopback(self.host):
            # No token on loopback: only this machine's users can reach the ports.
            props["disable_token_authorization"] = "true"
        elif props.get("disable_token_authorization") == "true":
            log.warning("token authorization is off on %s: keep these ports private", self.host)
        optional = {
            "default_workers_per_model": self.default_workers,
            "job_queue_size": self.job_queue_size,
            "default_response_timeout": self.response_timeout_s,
            "number_of_gpu": self.number_of_gpu,
        }
        props.update({k: str(v) for k, v in optional.items() if v is not None})
        return props

    def render(self) -> str:
        """The `config.properties` text of this instance."""
        lines = ["# written by service.launcher; edit model_store/config.properties instead"]
        lines += [f"{k}={v}" for k, v in self.properties().items()]
        return "\n".join(lines) + "\n"


def read_properties(path: str | Path) -> dict[str, str]:
    """Key/value pairs of a Java-style `config.properties` (comments and blanks skipped)."""
    props: dict[str, str] = {}
    for raw in Path(path).read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", "!")):
            continue
        key, sep, value = line.partition("=")
        if sep:
            props[key.strip()] = value.strip()
    return props


def archive_model_name(path: str | Path) -> str:
    """The model name recorded in a `.mar`'s manifest."""
    with zipfile.ZipFile(path) as z:
        manifest = json.loads(z.read(MANIFEST))
    return str(manifest["model"]["modelName"])


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """`count` distinct TCP ports that were free on `host` a moment ago."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(count)]
        for s in socks:
            s.bind((host, 0))
        return [int(s.getsockname()[1]) for s in socks]


def _bind_host(host: str) -> str:
    """A bind address as TorchServe's `*_address` URLs want it (IPv6 in brackets)."""
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def _url_host(host: str) -> str:
    """Where a client on this machine reaches a bind address (0.0.0.0 via loopback)."""
    if host in ("0.0.0.0", "", "::", "[::]"):
        return "127.0.0.1"
    return _bind_host(host)


def _is_loopback(host: str) -> bool:
    return host in ("localhost", "::1", "[::1]") or host.startswith("127.")


def local_config(
    model_store: str | Path,
    config_file: str | Path | None = None,
    models: Sequence[str] | None = None,
    host: str = "127.0.0.1",
    ports: Sequence[int] | None = None,
    workers: int | None = None,
    batching: tuple[int, int] | None = None,
) -> TorchServeConfig:
    """A config for this machine from the project's `config.properties`.

    Keeps its settings (queue size, timeouts, default workers) and overrides what is about
    this machine: the bind address (`host`, loopback by default), the ports (inference,
    management, metrics, gRPC inference, gRPC management; defaults 8080-8082, 7070-7071),
    the model store, the models (names of archives in the store; all of them by default)
    and, if given, the number of workers of every model and its dynamic batching (batch
    size, maximum batch delay in ms) instead of the archives' own (whose 16 and 10 ms suit
    a GPU; on a CPU host 8 and 1 ms serve more: docs/benchmarks.md).
    """
    store = Path(model_store)
    base = read_properties(config_file) if config_file and Path(config_file).exists() else {}
    for key in ("model_store", "load_models", "models"):
        base.pop(key, None)
    names = None
    if models:
        by_name = {archive_model_name(p): p.name for p in sorted(store.glob("*.mar"))}
        missing = [m for m in models if m not in by_name]
        if missing:
            raise TorchServeError(f"no archive for {missing} in {store} ({sorted(by_name)})")
        names = {m: by_name[m] for m in models}
    p = list(ports or (8080, 8081, 8082, 7070, 7071))
    cfg = TorchServeConfig(
        model_store=store,
        models=names,
        host=host,
        inference_port=p[0],
        management_port=p[1],
        metrics_port=p[2],
        grpc_inference_port=p[3],
        grpc_management_port=p[4],
        base=base,
    )
    if workers is not None or batching is not None:
        size, delay = batching if batching is not None else (None, None)
        cfg.settings = {
            name: ModelSettings(workers=workers, batch_size=size, max_batch_delay_ms=delay)
            for name in cfg.archives()
        }
    return cfg
