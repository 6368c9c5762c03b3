"""Start and stop a local TorchServe over a model store (the CLI and the tests use this).

`TorchServe(config).start()` writes a `config.properties` built from `TorchServeConfig`
(service/launcher/config.py) into a private working folder, launches `torchserve
--foreground` there in its own process group with a private TMPDIR (TorchServe keeps one
instance per temp folder: its pid file, the workers' Unix sockets and the unpacked archives
live there) and a private log folder, then `wait_ready()` polls the management API until
every model has a READY worker: TorchServe answers `/ping` before its workers are up, and
models with `ModelSettings` overrides are registered and scaled on the way. `stop()` asks
that instance to stop (`torchserve --stop` with the same TMPDIR, which terminates its Java
frontend), waits for the Java process and its Python workers to exit and kills whatever is
left of the process group, so no orphan Java process remains.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from service.launcher.config import ModelSettings, TorchServeConfig, TorchServeError
from service.launcher.groups import signal_group, wait_group_empty

log = logging.getLogger(__name__)


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
                if wait_group_empty(proc.pid, 1.0):
                    break
                signal_group(proc.pid, sig)
                if wait_group_empty(proc.pid, grace):
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
            signal_group(self.process.pid if self.process else 0, signal.SIGTERM)
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
