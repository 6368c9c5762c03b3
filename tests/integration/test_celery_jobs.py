"""The job queue for real: Redis, Celery workers started as subprocesses, the gateway.

Every key goes to Redis database 15 under a prefix unique to this run (`fer-test-<hex>:`),
which is deleted at the end; the broker queue, the job records and Celery's results all
carry it. Workers run `fer-service worker` (prefork, one pool process, as in production)
over a model store with the test `tdgan.mar` (tests/conftest.py), in their own process
group so that a test can SIGKILL a whole worker. Short timeouts make redelivery quick:
a message taken by a worker that died becomes visible again after 6 s.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient
from PIL import Image

from service.app import create_app
from service.jobs.celery_config import QUEUE
from service.settings import Settings

pytestmark = pytest.mark.integration

DATA = Path(__file__).resolve().parents[1] / "data"
REPO_STORE = Path(__file__).resolve().parents[2] / "model_store"
REDIS = "redis://127.0.0.1:6379/15"
FACE, EXPRESSION = "astronaut.jpg", "grace_hopper.jpg"
#: Seconds per call of the slow test network: long enough to kill a worker mid-job.
SLOW = 2.0

#: The job settings of the gateway and of the workers.
JOB_SETTINGS: dict[str, Any] = {
    "jobs": "celery",
    "redis_url": REDIS,
    "job_timeout": 4.0,
    "job_retries": 1,
    "job_retry_backoff": 0.5,
    "job_visibility_timeout": 6,
}


@pytest.fixture(scope="module")
def prefix() -> Iterator[str]:
    """A fresh key prefix in Redis db 15; every key under it is deleted afterwards."""
    client = redis.Redis.from_url(REDIS, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.ConnectionError as exc:
        pytest.fail(f"these tests need Redis at {REDIS}: {exc}")
    name = f"fer-test-{uuid.uuid4().hex[:8]}:"
    try:
        yield name
    finally:
        keys = list(client.scan_iter(match=f"{name}*", count=1000))
        if keys:
            client.delete(*keys)
        assert not list(client.scan_iter(match=f"{name}*"))
        client.close()


def _group_alive(pgid: int) -> list[int]:
    """Live (not zombie) processes of a process group."""
    alive = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError):
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                if int(fields[2]) == pgid and fields[0] != "Z":
                    alive.append(int(entry.name))
    return alive


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError):
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                if int(fields[1]) == pid and fields[0] != "Z":
                    found.append(int(entry.name))
    return found


class Worker:
    """`fer-service worker` in its own process group, logging to a file."""

    def __init__(
        self, name: str, store: Path, prefix: str, log: Path, extra: dict[str, str] | None = None
    ) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("FER_", "CELERY"))}
        env.update({f"FER_{k.upper()}": str(v) for k, v in JOB_SETTINGS.items()})
        env.update({"FER_REDIS_PREFIX": prefix, "FER_MODEL_STORE": str(store), **(extra or {})})
        self.log = log
        self.started = time.monotonic()
        with log.open("wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "service", "worker", "--hostname", f"{name}@%h"],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        return self.process.pid

    def kill(self) -> None:
        """SIGKILL the whole worker: main process and pool processes."""
        os.killpg(self.pid, signal.SIGKILL)
        self.process.wait(10)
        deadline = time.monotonic() + 5
        while _group_alive(self.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _group_alive(self.pid), "the killed worker left processes behind"

    def stop(self) -> None:
        """SIGTERM (Celery's warm shutdown), then SIGKILL whatever is left."""
        if self.process.poll() is None:
            os.killpg(self.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(15)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)
        self.process.wait(5)

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture
def workers(prefix: str, tmp_path: Path) -> Iterator[Callable[[str, Path], Worker]]:
    """Start workers; all of them are stopped at the end of the test, and their logs
    checked for image bytes."""
    started: list[Worker] = []

    def start(name: str, store: Path, extra: dict[str, str] | None = None) -> Worker:
        worker = Worker(name, store, prefix, tmp_path / f"{name}.log", extra)
        started.append(worker)
        return worker

    try:
        yield start
    finally:
        for worker in started:
            worker.stop()
        for worker in started:
            text = worker.output()
            # base64 of the JPEG and PNG signatures: no upload nor result in the logs
            assert "/9j/" not in text and "iVBORw0KGgo" not in text, worker.log
        for worker in started:
            assert not _group_alive(worker.pid)


def gateway(store: Path, prefix: str, **overrides: Any) -> Iterator[TestClient]:
    settings = Settings(
        **{**JOB_SETTINGS, "model_store": store, "redis_prefix": prefix, **overrides}
    )
    pillow_limit = Image.MAX_IMAGE_PIXELS
    try:
        with TestClient(create_app(settings), raise_server_exceptions=False) as c:
            yield c
    finally:
        Image.MAX_IMAGE_PIXELS = pillow_limit


@pytest.fixture(scope="module")
def api(transfer_store: Callable[[float], Path], prefix: str) -> Iterator[TestClient]:
    """The gateway with FER_JOBS=celery (it runs no job itself)."""
    yield from gateway(transfer_store(0.0), prefix)


@pytest.fixture(scope="module")
def files() -> dict[str, Any]:
    """The two uploads of a transfer."""
    return {
        name: (f, (DATA / f).read_bytes())
        for name, f in [("face", FACE), ("expression", EXPRESSION)]
    }


def assert_problem(response: Any, status: int, slug: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert body["type"] == f"urn:fer-service:problem:{slug}", body
    return body


def wait_for_status(api: TestClient, job_id: str, status: str, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = api.get(f"/jobs/{job_id}").json()
        if job["status"] == status:
            return dict(job)
        time.sleep(0.02)
    raise AssertionError(f"job {job_id} not {status} within {timeout} s: {job}")


def test_job_completes_on_a_worker(
    api: TestClient,
    workers: Callable[[str, Path], Worker],
    transfer_store: Callable[[float], Path],
    files: dict[str, Any],
    prefix: str,
) -> None:
    metrics_port = closed_port()
    worker = workers("fast", transfer_store(0.0), {"FER_WORKER_METRICS_PORT": str(metrics_port)})
    r = api.post("/transfer", params={"wait": 30}, files=files)  # includes the worker's start
    assert r.status_code == 200, (r.text, worker.output()[-3000:])
    print(f"\nfirst job done {time.monotonic() - worker.started:.2f} s after starting the worker")

    latencies = []
    for _ in range(3):
        t0 = time.monotonic()
        r = api.post("/transfer", params={"wait": 30}, files=files)
        latencies.append(time.monotonic() - t0)
        assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    print(f"job latency through Redis and a worker: {', '.join(f'{t:.3f}' for t in latencies)} s")
    assert Image.open(io.BytesIO(r.content)).size == (64, 64)
    assert worker_jobs_timed(metrics_port) == 4  # the worker's own /metrics

    job = api.get(r.headers["location"]).json()
    assert job["status"] == "succeeded" and job["attempts"] == 1
    meta = api.get(job["result_url"], headers={"Accept": "application/json"}).json()
    assert meta["inputs"]["expression"]["faces_found"] == 1

    # uploads live only as long as the job: gone once it finished; the rest has a TTL
    client = redis.Redis.from_url(REDIS)
    assert not client.exists(f"{prefix}job:{job['id']}:inputs")
    assert 0 < client.ttl(f"{prefix}job:{job['id']}") <= 3600
    assert 0 < client.ttl(f"{prefix}job:{job['id']}:result") <= 3600

    key = {"Idempotency-Key": "abc"}
    first = api.post("/transfer", files=files, headers=key)
    again = api.post("/transfer", files=files, headers=key)
    assert first.status_code == again.status_code == 202
    assert first.json()["id"] == again.json()["id"]

    assert api.delete(first.headers["location"]).status_code == 204
    assert api.get(first.headers["location"]).status_code == 404
    assert not list(client.scan_iter(match=f"{prefix}job:{first.json()['id']}*"))
    client.close()


def test_killed_workers_lose_no_job(
    api: TestClient,
    workers: Callable[[str, Path], Worker],
    transfer_store: Callable[[float], Path],
    files: dict[str, Any],
) -> None:
    """(1) A whole worker SIGKILLed mid-job: another worker runs the job once the visibility
    timeout gives its message back. (2) Only the pool process SIGKILLed: the worker gives
    the message back at once (reject_on_worker_lost) and runs it again."""
    slow = transfer_store(SLOW)
    first = workers("first", slow)
    job = api.post("/transfer", files=files).json()
    wait_for_status(api, job["id"], "running")
    time.sleep(0.3)  # inside the network's 2 s
    first.kill()
    killed = time.monotonic()
    assert api.get(f"/jobs/{job['id']}").json()["status"] == "running"

    second = workers("second", slow)
    r = api.get(f"/jobs/{job['id']}/result", params={"wait": 30})
    assert r.status_code == 200, (r.text, second.output()[-3000:])
    print(f"\nredelivered and done {time.monotonic() - killed:.2f} s after the SIGKILL")
    done = api.get(f"/jobs/{job['id']}").json()
    assert done["status"] == "succeeded" and done["attempts"] == 2
    assert "was interrupted" in second.output()

    job = api.post("/transfer", files=files).json()
    wait_for_status(api, job["id"], "running")
    time.sleep(0.3)
    (pool,) = _children(second.pid)
    os.kill(pool, signal.SIGKILL)
    killed = time.monotonic()
    r = api.get(f"/jobs/{job['id']}/result", params={"wait": 30})
    assert r.status_code == 200, (r.text, second.output()[-3000:])
    print(f"pool process killed: done {time.monotonic() - killed:.2f} s later, same worker")
    assert api.get(f"/jobs/{job['id']}").json()["attempts"] == 2
    assert second.process.poll() is None


def test_a_stream_of_jobs_survives_a_killed_worker(
    api: TestClient,
    workers: Callable[[str, Path], Worker],
    transfer_store: Callable[[float], Path],
    files: dict[str, Any],
) -> None:
    """Two workers take a stream of jobs; one is SIGKILLed while the stream goes on: every
    job still succeeds (the dead worker's job is delivered again), none is lost."""
    store = transfer_store(0.5)
    doomed, survivor = workers("doomed", store), workers("survivor", store)
    ids = [api.post("/transfer", files=files).json()["id"] for _ in range(4)]
    deadline = time.monotonic() + 60
    while not any(api.get(f"/jobs/{i}").json()["status"] != "queued" for i in ids):
        assert time.monotonic() < deadline, (doomed.output()[-2000:], survivor.output()[-2000:])
        time.sleep(0.05)
    for _ in range(4):
        ids.append(api.post("/transfer", files=files).json()["id"])
    doomed.kill()
    for _ in range(4):
        ids.append(api.post("/transfer", files=files).json()["id"])
    statuses = {}
    for job_id in ids:
        r = api.get(f"/jobs/{job_id}/result", params={"wait": 60})
        statuses[job_id] = api.get(f"/jobs/{job_id}").json()["status"]
        assert r.status_code == 200, (r.text, survivor.output()[-3000:])
    assert set(statuses.values()) == {"succeeded"} and len(statuses) == 12
    assert survivor.process.poll() is None


def worker_jobs_timed(port: int) -> float:
    """Succeeded transfer jobs timed by the worker whose pool process serves metrics on
    `port` (its pool process' index is added to the port: 0 or 1)."""
    from prometheus_client.parser import text_string_to_metric_families

    for candidate in (port, port + 1):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{candidate}/metrics", timeout=5) as r:
                text = r.read().decode()
        except OSError:
            continue
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                labels = sample.labels
                if (
                    sample.name == "fer_job_duration_seconds_count"
                    and labels.get("kind") == "transfer"
                    and labels.get("outcome") == "succeeded"
                ):
                    return float(sample.value)
        return 0.0
    raise AssertionError(f"no worker metrics on port {port} or {port + 1}")


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_redis_down(
    transfer_store: Callable[[float], Path], files: dict[str, Any], prefix: str
) -> None:
    url = f"redis://127.0.0.1:{closed_port()}/15"
    for api in gateway(transfer_store(0.0), prefix, redis_url=url):
        t0 = time.monotonic()
        r = api.post("/transfer", files=files)
        took = time.monotonic() - t0
        print(f"\n/transfer with Redis down: {r.status_code} in {took:.3f} s")
        body = assert_problem(r, 503, "queue-unavailable")
        assert url.split("//")[1] not in str(body)  # Redis' address stays inside
        assert int(r.headers["retry-after"]) > 0
        assert took < 2.0
        assert_problem(api.get(f"/jobs/{'0' * 32}"), 503, "queue-unavailable")

        r = api.get("/readyz")
        assert url.split("//")[1] not in r.text
        check = r.json()["checks"]["jobs"]
        assert check == {"ok": False, "detail": "cannot reach Redis"}
        assert "jobs" in r.json()["degraded"] and "transfer" in r.json()["degraded"]


class RedisServer:
    """A redis-server of this test alone, on a free port, in memory only: to kill, pause
    (SIGSTOP) and restart without touching the machine's Redis."""

    def __init__(self, workdir: Path) -> None:
        self.port = closed_port()
        self.workdir = workdir
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis.from_url(self.url, socket_connect_timeout=0.2)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                assert time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.05)
        client.close()

    def signal(self, sig: signal.Signals) -> None:
        assert self.process is not None
        self.process.send_signal(sig)

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)
        self.process.kill()
        self.process.wait(10)


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    server.start()
    try:
        yield server
    finally:
        if server.process is not None and server.process.poll() is None:
            server.kill()


@pytest.fixture(scope="module")
def classify_and_transfer_store(
    transfer_store: Callable[[float], Path], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """The shipped compact classifier and the test tdgan, side by side."""
    store = tmp_path_factory.mktemp("both") / "store"
    store.mkdir()
    shutil.copy(REPO_STORE / "compact.mar", store / "compact.mar")
    shutil.copy(transfer_store(0.0) / "tdgan.mar", store / "tdgan.mar")
    return store


def timed(call: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[Any, float]:
    t0 = time.monotonic()
    answer = call(*args, **kwargs)
    return answer, time.monotonic() - t0


#: The bound the issue sets on a job call against a paused Redis, and slack for a loaded
#: machine (the calls themselves give up after 2 x FER_REDIS_TIMEOUT = 1 s).
PAUSED_BOUND = 1.0
SLACK = 0.75


def test_redis_paused_killed_and_restarted(
    own_redis: RedisServer,
    classify_and_transfer_store: Path,
    files: dict[str, Any],
    prefix: str,
) -> None:
    """A paused Redis fails job calls within 1 s (it took 4-9 s) while /classify and
    readiness go on; a killed one too; a restarted one is used again by the same gateway."""
    photo = {"image": files["face"]}
    for api in gateway(classify_and_transfer_store, prefix, redis_url=own_redis.url):
        job = api.post("/transfer", files=files)
        assert job.status_code == 202, job.text
        location = job.headers["location"]

        own_redis.signal(signal.SIGSTOP)
        try:
            for method, path, kwargs in [
                ("POST", "/transfer", {"files": files}),
                ("GET", location, {}),
                ("GET", f"{location}/result", {"params": {"wait": 5}}),
                ("DELETE", location, {}),
            ]:
                r, took = timed(api.request, method, path, **kwargs)
                print(f"\npaused Redis: {method} {path}: {r.status_code} in {took:.3f} s")
                assert_problem(r, 503, "queue-unavailable")
                assert took < PAUSED_BOUND + SLACK
            r, took = timed(api.get, "/readyz")
            assert r.status_code == 200 and took < PAUSED_BOUND + SLACK, r.text
            assert r.json()["status"] == "degraded" and "jobs" in r.json()["degraded"]
            assert api.post("/classify", files=photo).status_code == 200
        finally:
            own_redis.signal(signal.SIGCONT)
        assert api.get(location).status_code == 200  # the same connection recovers

        own_redis.kill()
        r, took = timed(api.post, "/transfer", files=files)
        assert_problem(r, 503, "queue-unavailable")
        assert took < PAUSED_BOUND + SLACK
        assert api.get("/readyz").status_code == 200

        own_redis.start()  # in memory only: the job is gone, the gateway carries on
        deadline = time.monotonic() + 10
        while (r := api.post("/transfer", files=files)).status_code != 202:
            assert time.monotonic() < deadline, r.text
            time.sleep(0.2)
        assert_problem(api.get(location), 404, "job-not-found")
        ready = api.get("/readyz").json()
        assert ready["capabilities"]["jobs"]["ok"] and ready["capabilities"]["transfer"]["ok"]


def test_unknown_and_expired_jobs(
    transfer_store: Callable[[float], Path], files: dict[str, Any], prefix: str
) -> None:
    """No worker runs here: the job stays queued until its TTL ends it."""
    for api in gateway(transfer_store(0.0), prefix, job_ttl=1):
        assert_problem(api.get(f"/jobs/{'0' * 32}"), 404, "job-not-found")
        assert_problem(api.get(f"/jobs/{'0' * 32}/result"), 404, "job-not-found")
        r = api.post("/transfer", files=files)
        assert r.status_code == 202 and r.json()["status"] == "queued"
        location = r.headers["location"]
        assert_problem(api.get(f"{location}/result"), 409, "job-not-finished")
        time.sleep(1.1)
        assert_problem(api.get(location), 404, "job-not-found")
        # the message that is left is skipped by whichever worker takes it
        client = redis.Redis.from_url(REDIS)
        assert client.llen(f"{prefix}{QUEUE}") == 1
        client.close()


def test_frontalize_job_on_a_worker(
    workers: Callable[[str, Path], Worker],
    frontalize_store: Path,
    prefix: str,
) -> None:
    """`POST /frontalize` is a job kind like transfer: queued by the gateway, run by a
    worker (the test frontalizer archive: real network, tiny and untrained)."""
    worker = workers("frontalizer", frontalize_store)
    for api in gateway(frontalize_store, prefix):
        face = {"face": (FACE, (DATA / FACE).read_bytes())}
        r = api.post("/frontalize", params={"wait": 30}, files=face)
        assert r.status_code == 200, (r.text, worker.output()[-3000:])
        assert r.headers["content-type"] == "image/png"
        assert Image.open(io.BytesIO(r.content)).size == (48, 48)
        job = api.get(r.headers["location"]).json()
        assert job["kind"] == "frontalize" and job["status"] == "succeeded"


def test_video_job_on_a_worker(
    workers: Callable[[str, Path], Worker],
    classify_and_transfer_store: Path,
    prefix: str,
) -> None:
    """`POST /classify/video` through Redis and a worker: the worker probes the stored
    clip again, streams its frames, reports progress into the record and stores the JSON
    result; the clip is deleted from Redis once the job finished."""
    worker = workers("video", classify_and_transfer_store)
    for api in gateway(classify_and_transfer_store, prefix):
        clip = {"video": ("single_face.mp4", (DATA / "single_face.mp4").read_bytes())}
        r = api.post("/classify/video", params={"wait": 60}, files=clip)
        assert r.status_code == 200, (r.text, worker.output()[-3000:])
        body = r.json()
        assert body["kind"] == "video" and len(body["frames"]) == 12
        assert [len(t["frames"]) for t in body["tracks"]] == [12]
        job = api.get(f"/jobs/{body['id']}").json()
        assert job["progress"] == {"done": 12, "total": 12, "unit": "frames"}
        timeline = api.get(body["timeline_url"])
        assert timeline.status_code == 200 and timeline.headers["content-type"] == "image/png"
        client = redis.Redis.from_url(REDIS)
        assert not client.exists(f"{prefix}job:{body['id']}:inputs")
        client.close()
