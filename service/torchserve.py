"""Start and stop a local TorchServe over a model store (the CLI and the tests use this).

`TorchServe(config).start()` writes a `config.properties` built from `TorchServeConfig` into
a private working folder, launches `torchserve --foreground` there in its own process group
with a private TMPDIR (TorchServe keeps one instance per temp folder: its pid file, the
workers' Unix sockets and the unpacked archives live there) and a private log folder, then
`wait_ready()` polls the management API until every model has a READY worker: TorchServe
answers `/ping` before its workers are up. `stop()` asks that instance to stop (`torchserve
--stop` with the same TMPDIR, which terminates its Java frontend), waits for the Java
process and its Python workers to exit and kills whatever is left of the process group, so
no orphan Java process remains.

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
import functools
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Any

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
        lines = ["# written by service.torchserve; edit model_store/config.properties instead"]
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
        manifest = json.loads(z.read("MAR-INF/MANIFEST.json"))
    return str(manifest["model"]["modelName"])


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """`count` distinct TCP ports that were free on `host` a moment ago."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(count)]
        for s in socks:
            s.bind((host, 0))
        return [int(s.getsockname()[1]) for s in socks]


def torchserve_executable() -> str:
    """The `torchserve` launcher next to this Python, else the one on PATH."""
    local = Path(sys.executable).parent / "torchserve"
    if local.exists():
        return str(local)
    found = shutil.which("torchserve")
    if found is None:
        raise TorchServeError("torchserve is not installed (pip install torchserve)")
    return found


class TorchServe:
    """One local TorchServe instance with a private working folder.

    Use as a context manager (`with TorchServe(cfg) as ts: ...` starts, waits for the
    workers and stops), or call `start`, `wait_ready` and `stop` yourself. With
    `output=None` TorchServe's console log goes to `<workdir>/torchserve.out`; pass
    `sys.stdout` to see it.
    """

    def __init__(
        self,
        config: TorchServeConfig,
        workdir: str | Path | None = None,
        output: IO[Any] | None = None,
        env: Mapping[str, str] | None = None,
        ready_timeout: float = 120.0,
    ) -> None:
        self.config = config
        self.ready_timeout = ready_timeout
        self._own_workdir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="fer-torchserve-")).resolve()
        self.tmpdir = self.workdir / "tmp"
        self.logdir = self.workdir / "logs"
        self.config_file = self.workdir / "config.properties"
        self._output = output
        self._env = dict(os.environ if env is None else env)
        self._log: IO[Any] | None = None
        self.process: subprocess.Popen[bytes] | None = None

    # -- addresses -----------------------------------------------------------------------
    @property
    def inference_url(self) -> str:
        """Base URL of the inference API (`/predictions/<model>`)."""
        return self.config.inference_url

    @property
    def management_url(self) -> str:
        """Base URL of the management API (`/models/<model>`)."""
        return self.config.management_url

    @property
    def metrics_url(self) -> str:
        """Base URL of the metrics endpoint (`/metrics`)."""
        return self.config.metrics_url

    @property
    def log_file(self) -> Path:
        """TorchServe's console output when it is not sent elsewhere."""
        return self.workdir / "torchserve.out"

    # -- life cycle ----------------------------------------------------------------------
    def environment(self) -> dict[str, str]:
        """The environment TorchServe runs in: private temp and log folders."""
        env = dict(self._env)
        # Our config file must win; the launcher and Java both read TS_CONFIG_FILE first.
        env.pop("TS_CONFIG_FILE", None)
        env.update(
            {
                "TMPDIR": str(self.tmpdir),  # the launcher's pid file
                "TEMP": str(self.tmpdir),  # -> java.io.tmpdir: worker sockets, unpacked models
                "LOG_LOCATION": str(self.logdir),
                "METRICS_LOCATION": str(self.logdir),
            }
        )
        return env

    def start(self) -> None:
        """Write the config and launch TorchServe in its own process group."""
        if self.process is not None:
            raise TorchServeError("this TorchServe is already started")
        # Workers listen on Unix sockets in the temp folder; their paths are capped at 107 bytes.
        if len(str(self.tmpdir / ".ts.sock.65535")) > 100:
            raise TorchServeError(f"working folder path too long for sockets: {self.workdir}")
        for d in (self.workdir, self.tmpdir, self.logdir):
            d.mkdir(parents=True, exist_ok=True)
        self.config_file.write_text(self.config.render())
        cmd = [
            torchserve_executable(),
            "--foreground",
            "--ts-config",
            str(self.config_file),
            "--model-store",
            str(self.config.model_store.resolve()),
            "--ncs",  # no config snapshots: each start is exactly this config
        ]
        props = self.config.properties()
        if props.get("disable_token_authorization") == "true":
            cmd.append("--disable-token-auth")
        if props.get("enable_model_api") == "true":
            cmd.append("--enable-model-api")
        out: IO[Any]
        if self._output is None:
            self._log = out = open(self.log_file, "ab")  # noqa: SIM115 - closed by stop()
        else:
            out = self._output
        log.info("starting TorchServe: %s (in %s)", " ".join(cmd), self.workdir)
        self.process = subprocess.Popen(
            cmd,
            cwd=self.workdir,
            env=self.environment(),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # one process group: launcher, Java and its workers
        )

    def wait_ready(self, timeout: float | None = None) -> None:
        """Block until every model has a READY worker (at most `timeout` s, default the
        constructor's `ready_timeout`); apply per-model settings on the way."""
        deadline = time.monotonic() + (self.ready_timeout if timeout is None else timeout)
        self._wait_for(self._management_answers, deadline, "the management API")
        archives = self.config.archives()
        # TorchServe registers its startup models before it binds its ports, so a startup
        # model it does not know by now failed to load: say so instead of timing out.
        registered = {m["modelName"] for m in self._request("GET", "/models")["models"]}
        missing = sorted(set(self.config.startup_models()) - registered)
        if missing:
            raise TorchServeError(f"TorchServe did not load {missing}:\n{self.log_tail()}")
        for name, mar in archives.items():
            settings = self.config.settings.get(name, ModelSettings())
            if settings.overrides_batching:
                self._register(name, mar, settings)
        for name in archives:
            self._wait_for(functools.partial(self._has_workers, name, 1), deadline, f"model {name}")
            workers = self.config.settings.get(name, ModelSettings()).workers
            if workers is not None:
                self._scale(name, workers)
                self._wait_for(
                    functools.partial(self._has_workers, name, workers), deadline, f"model {name}"
                )

    def describe(self, model: str) -> dict[str, Any]:
        """The management API's description of a model (its first version)."""
        rows = self._request("GET", f"/models/{model}")
        if not isinstance(rows, list) or not rows:
            raise TorchServeError(f"unexpected description of {model}: {rows!r}")
        return dict(rows[0])

    def ready_workers(self, model: str) -> int:
        """How many of the model's workers are READY (0 while it is not registered)."""
        try:
            workers = self.describe(model).get("workers", [])
        except (TorchServeError, OSError):
            return 0
        return sum(1 for w in workers if w.get("status") == "READY")

    def wait(self) -> int:
        """Block until TorchServe exits by itself; its exit code."""
        if self.process is None:
            raise TorchServeError("TorchServe is not started")
        return self.process.wait()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop this instance and every process it started; idempotent."""
        proc = self.process
        if proc is None:
            return
        try:
            if proc.poll() is None:
                self._request_stop(timeout)
                try:
                    proc.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    log.warning("TorchServe did not stop in %.0f s; terminating it", timeout)
            # Whatever is left of the group (Java if the launcher died, workers if Java
            # did): TERM first, then KILL. The group id is the launcher's pid.
            for sig, grace in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
                if _wait_group_empty(proc.pid, 1.0):
                    break
                _signal_group(proc.pid, sig)
                if _wait_group_empty(proc.pid, grace):
                    break
            else:
                log.error("processes of TorchServe group %d survived SIGKILL", proc.pid)
            if proc.poll() is None:
                proc.kill()
            proc.wait()
        finally:
            self.process = None
            if self._log is not None:
                self._log.close()
                self._log = None

    def cleanup(self) -> None:
        """Stop, then delete the working folder if this object created it."""
        self.stop()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def log_tail(self, lines: int = 40) -> str:
        """The end of TorchServe's own log (or console output), for error messages."""
        for path in (self.logdir / "ts_log.log", self.log_file):
            if path.exists():
                # Without the access log: our own readiness polls would fill the tail.
                text = path.read_text(errors="replace").splitlines()
                return "\n".join([t for t in text if " ACCESS_LOG " not in t][-lines:])
        return ""

    def __enter__(self) -> TorchServe:
        self.start()
        try:
            self.wait_ready()
        except BaseException:
            self.cleanup()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.cleanup()

    # -- internals -----------------------------------------------------------------------
    def _request(self, method: str, path: str, timeout: float = 10.0) -> Any:
        req = urllib.request.Request(self.management_url + path, method=method)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as exc:
            body = exc.read().decode(errors="replace")
            raise TorchServeError(f"{method} {path}: HTTP {exc.code}: {body}") from exc

    def _has_workers(self, model: str, count: int) -> bool:
        return self.ready_workers(model) >= count

    def _management_answers(self) -> bool:
        try:
            self._request("GET", "/models", timeout=2.0)
        except (TorchServeError, OSError):
            return False
        return True

    def _wait_for(self, ready: Callable[[], bool], deadline: float, what: str) -> None:
        while not ready():
            if self.process is None or self.process.poll() is not None:
                raise TorchServeError(
                    f"TorchServe exited while waiting for {what}:\n{self.log_tail()}"
                )
            if time.monotonic() > deadline:
                raise TorchServeError(f"timed out waiting for {what}:\n{self.log_tail()}")
            time.sleep(0.25)

    def _register(self, name: str, mar: str, settings: ModelSettings) -> None:
        params = {
            "url": mar,
            "model_name": name,
            "batch_size": settings.batch_size,
            "max_batch_delay": settings.max_batch_delay_ms,
            "response_timeout": settings.response_timeout_s,
            "initial_workers": settings.workers or 1,
            "synchronous": "true",
        }
        query = urllib.parse.urlencode({k: v for k, v in params.items() if v is not None})
        self._request("POST", f"/models?{query}", timeout=120.0)

    def _scale(self, name: str, workers: int) -> None:
        query = urllib.parse.urlencode(
            {"min_worker": workers, "max_worker": workers, "synchronous": "true"}
        )
        self._request("PUT", f"/models/{name}?{query}", timeout=120.0)

    def _request_stop(self, timeout: float) -> None:
        """`torchserve --stop` for this instance: it finds our Java by the pid file in TMPDIR."""
        if not (self.tmpdir / ".model_server.pid").exists():  # not launched yet or gone
            _signal_group(self.process.pid if self.process else 0, signal.SIGTERM)
            return
        try:
            subprocess.run(
                [torchserve_executable(), "--stop", "--foreground"],
                cwd=self.workdir,
                env=self.environment(),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            log.warning("torchserve --stop timed out")


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


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    if pgid <= 0:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _group_members(pgid: int) -> Iterator[int]:
    """Live (not zombie) processes of a process group, read from /proc."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # "pid (comm) state ppid pgrp ...": comm may contain spaces, so split after ')'.
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] != "Z":
            yield int(entry.name)


def _group_alive(pgid: int) -> bool:
    if Path("/proc/self/stat").exists():
        return any(True for _ in _group_members(pgid))
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _wait_group_empty(pgid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while _group_alive(pgid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def local_config(
    model_store: str | Path,
    config_file: str | Path | None = None,
    models: Sequence[str] | None = None,
    host: str = "127.0.0.1",
    ports: Sequence[int] | None = None,
    workers: int | None = None,
) -> TorchServeConfig:
    """A config for this machine from the project's `config.properties`.

    Keeps its settings (queue size, timeouts, default workers) and overrides what is about
    this machine: the bind address (`host`, loopback by default), the ports (inference,
    management, metrics, gRPC inference, gRPC management; defaults 8080-8082, 7070-7071),
    the model store, the models (names of archives in the store; all of them by default)
    and, if given, the number of workers of every model.
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
    if workers is not None:
        cfg.settings = {name: ModelSettings(workers=workers) for name in cfg.archives()}
    return cfg


class _StopRequested(Exception):
    """Raised by the SIGTERM handler of `run_foreground`."""


def run_foreground(server: TorchServe, ready_timeout: float = 180.0) -> int:
    """Start `server`, wait for its workers, then block until Ctrl-C/SIGTERM or its death.

    Always stops TorchServe (and so its Java frontend and workers) before returning: 0 after
    a requested stop, TorchServe's exit code (or 1) if it died or never became ready.
    """

    def on_term(signum: int, frame: Any) -> None:
        raise _StopRequested

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        started = time.monotonic()
        server.start()
        server.wait_ready(ready_timeout)
        log.info(
            "TorchServe ready in %.1f s: inference %s, management %s, metrics %s/metrics",
            time.monotonic() - started,
            server.inference_url,
            server.management_url,
            server.metrics_url,
        )
        code = server.wait()
        log.error("TorchServe exited by itself with code %s", code)
        return code or 1
    except (KeyboardInterrupt, _StopRequested):
        return 0
    except TorchServeError as exc:
        log.error("%s", exc)
        return 1
    finally:
        # A second Ctrl-C must not interrupt the stop and leave Java running.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            server.cleanup()
        finally:
            signal.signal(signal.SIGINT, signal.default_int_handler)
            signal.signal(signal.SIGTERM, previous)
