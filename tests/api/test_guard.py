"""API keys, per-caller limits, CORS, the privacy of jobs and Idempotency-Keys, and the
addresses the gateway hands out: the real app (embedded jobs, the test tdgan archive)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from service.app import create_app
from service.settings import Settings

FACE, EXPRESSION = "astronaut.jpg", "grace_hopper.jpg"
KEYS = ["key-of-alice", "key-of-bob"]
ALICE = {"Authorization": f"Bearer {KEYS[0]}"}
BOB = {"X-API-Key": KEYS[1]}


def uploads(photo: Callable[[str], bytes], face: str = FACE) -> dict[str, Any]:
    return {"face": (face, photo(face)), "expression": (EXPRESSION, photo(EXPRESSION))}


def started(settings: Settings, client: tuple[str, int] = ("10.0.0.1", 5000)) -> TestClient:
    return TestClient(create_app(settings), raise_server_exceptions=False, client=client)


@pytest.fixture(scope="module")
def store(transfer_store: Callable[[float], Path]) -> Path:
    return transfer_store(0.0)


@pytest.fixture(scope="module")
def keyed(store: Path) -> Iterator[TestClient]:
    """The app with two API keys."""
    limit = Image.MAX_IMAGE_PIXELS
    settings = Settings(model_store=store, api_keys=KEYS)  # type: ignore[arg-type]
    with started(settings) as c:
        yield c
    Image.MAX_IMAGE_PIXELS = limit


def test_every_path_but_the_open_ones_needs_a_key(keyed: TestClient, assert_problem) -> None:
    job = f"/jobs/{'0' * 32}"
    for method, path in [
        ("POST", "/classify"),
        ("POST", "/transfer"),
        ("GET", job),
        ("GET", f"{job}/result"),
        ("DELETE", job),
        ("GET", "/models"),
        ("GET", "/models/compact"),
        ("GET", "/openapi.json"),
        ("GET", "/docs"),
        ("GET", "/nowhere"),
    ]:
        r = keyed.request(method, path)
        assert_problem(r, 401, "unauthorized")
        assert r.headers["www-authenticate"].startswith("Bearer")
        r = keyed.request(method, path, headers={"X-API-Key": "guessed"})
        assert_problem(r, 403, "forbidden")
    for path in ("/healthz", "/readyz", "/metrics"):
        assert keyed.get(path).status_code in (200, 503), path
    assert keyed.get("/models", headers=ALICE).status_code == 200
    assert keyed.get("/models", headers=BOB).status_code == 200
    assert keyed.get("/models", headers={"Authorization": f"bearer {KEYS[1]}"}).status_code == 200


def test_open_paths_are_configurable(store: Path, assert_problem) -> None:
    settings = Settings(model_store=store, api_keys=KEYS, open_paths=["/healthz"])  # type: ignore[arg-type]
    with started(settings) as c:
        assert c.get("/healthz").status_code == 200
        assert_problem(c.get("/metrics"), 401, "unauthorized")
        assert_problem(c.get("/readyz"), 401, "unauthorized")


def test_keys_never_see_each_others_jobs(
    keyed: TestClient, photo: Callable[[str], bytes], assert_problem
) -> None:
    r = keyed.post("/transfer", params={"wait": 20}, files=uploads(photo), headers=ALICE)
    assert r.status_code == 200, r.text
    location = r.headers["location"]
    assert keyed.get(location, headers=ALICE).json()["status"] == "succeeded"
    for other in (BOB,):
        assert_problem(keyed.get(location, headers=other), 404, "job-not-found")
        assert_problem(keyed.get(f"{location}/result", headers=other), 404, "job-not-found")
        assert_problem(keyed.delete(location, headers=other), 404, "job-not-found")
    assert keyed.get(f"{location}/result", headers=ALICE).status_code == 200
    assert keyed.delete(location, headers=ALICE).status_code == 204


def test_idempotency_keys_belong_to_the_caller(
    keyed: TestClient, photo: Callable[[str], bytes]
) -> None:
    """The README's own example key, used by two callers: two jobs, each its caller's."""
    key = {"Idempotency-Key": "42"}
    alice = keyed.post("/transfer", files=uploads(photo), headers={**ALICE, **key})
    bob = keyed.post("/transfer", files=uploads(photo), headers={**BOB, **key})
    assert alice.status_code == bob.status_code == 202, (alice.text, bob.text)
    assert alice.json()["id"] != bob.json()["id"]
    assert "idempotent-replayed" not in bob.headers
    again = keyed.post("/transfer", files=uploads(photo), headers={**BOB, **key})
    assert again.json()["id"] == bob.json()["id"] and again.headers["idempotent-replayed"]


def test_idempotency_keys_belong_to_the_client_without_api_keys(
    store: Path, photo: Callable[[str], bytes], serve
) -> None:
    """Two clients (two loopback addresses, over real sockets) send the same key: each
    gets its own job."""
    key = {"Idempotency-Key": "42"}
    with serve(create_app(Settings(model_store=store))) as url:
        clients = [
            httpx.Client(base_url=url, transport=httpx.HTTPTransport(local_address=address))
            for address in ("127.0.0.1", "127.0.0.2")
        ]
        with clients[0] as one, clients[1] as two:
            first = one.post("/transfer", files=uploads(photo), headers=key)
            second = two.post("/transfer", files=uploads(photo), headers=key)
            assert first.status_code == second.status_code == 202, (first.text, second.text)
            assert first.json()["id"] != second.json()["id"]
            assert "idempotent-replayed" not in second.headers
            again = two.post("/transfer", files=uploads(photo), headers=key)
            assert again.json()["id"] == second.json()["id"]
            # without API keys a job belongs to whoever has its id: the other client reads it
            assert two.get(first.headers["location"]).status_code == 200


def test_idempotency_key_is_bound_to_the_request(
    keyed: TestClient, photo: Callable[[str], bytes], assert_problem
) -> None:
    key = {**ALICE, "Idempotency-Key": "bound"}
    first = keyed.post("/transfer", files=uploads(photo), headers=key)
    assert first.status_code == 202
    other_image = keyed.post("/transfer", files=uploads(photo, face=EXPRESSION), headers=key)
    assert_problem(other_image, 422, "idempotency-key-reused")
    other_params = keyed.post(
        "/transfer", params={"face_index": 1}, files=uploads(photo), headers=key
    )
    assert_problem(other_params, 422, "idempotency-key-reused")
    same = keyed.post("/transfer", files=uploads(photo), headers=key)
    assert same.status_code == 202 and same.json()["id"] == first.json()["id"]


def test_rate_limit(store: Path, assert_problem) -> None:
    settings = Settings(model_store=store, api_keys=KEYS, rate_limit=0.5, rate_burst=3)  # type: ignore[arg-type]
    with started(settings) as c:
        assert [c.get("/models", headers=ALICE).status_code for _ in range(3)] == [200] * 3
        r = c.get("/models", headers=ALICE)
        assert_problem(r, 429, "rate-limited")
        assert int(r.headers["retry-after"]) >= 1
        assert c.get("/models", headers=BOB).status_code == 200  # each key has its own
        assert c.get("/healthz").status_code == 200  # probes are not limited


def test_concurrency_limit(
    transfer_store: Callable[[float], Path], photo: Callable[[str], bytes], assert_problem
) -> None:
    """While one request of a caller is in progress (a 2 s job waited for), its next
    requests are 429; once it is done they pass again."""
    settings = Settings(model_store=transfer_store(2.0), concurrency_limit=1)
    with started(settings) as c:
        slow: dict[str, Any] = {}

        def transfer() -> None:
            # It may lose the race to one of the probes below: then it tries again.
            while (
                r := c.post("/transfer", params={"wait": 30}, files=uploads(photo))
            ).status_code == 429:
                time.sleep(0.01)
            slow["r"] = r

        thread = threading.Thread(target=transfer)
        thread.start()
        refused = None
        while thread.is_alive() and refused is None:
            r = c.get("/models")
            refused = r if r.status_code == 429 else None
            time.sleep(0.05)
        thread.join()
        assert slow["r"].status_code == 200, slow["r"].text
        assert refused is not None, "no request was refused while the first one ran"
        assert_problem(refused, 429, "rate-limited")
        assert refused.headers["retry-after"] == "1"
        assert c.get("/models").status_code == 200


def test_cors(store: Path) -> None:
    settings = Settings(model_store=store, api_keys=KEYS, cors_origins=["https://app.example"])  # type: ignore[arg-type]
    with started(settings) as c:
        preflight = c.options(
            "/classify",
            headers={
                "Origin": "https://app.example",
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization",
            },
        )
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == "https://app.example"
        r = c.get("/models", headers={"Origin": "https://app.example"})
        assert r.status_code == 401  # a browser sees why, too
        assert r.headers["access-control-allow-origin"] == "https://app.example"
        r = c.get("/models", headers={"Origin": "https://evil.example", **ALICE})
        assert "access-control-allow-origin" not in r.headers


def test_job_urls_ignore_the_host_header(store: Path, photo: Callable[[str], bytes]) -> None:
    with started(Settings(model_store=store)) as c:
        r = c.post("/transfer", files=uploads(photo), headers={"Host": "evil.example"})
        assert r.status_code == 202
        job = r.json()
        assert r.headers["location"] == job["url"] == f"/jobs/{job['id']}"
        assert "evil" not in r.text
    public = Settings(model_store=store, public_url="https://fer.example.com/")  # type: ignore[arg-type]
    with started(public) as c:
        r = c.post(
            "/transfer", params={"wait": 20}, files=uploads(photo), headers={"Host": "evil.example"}
        )
        assert r.headers["location"].startswith("https://fer.example.com/jobs/")
        job = c.get(r.headers["location"]).json()
        assert job["result_url"] == f"https://fer.example.com/jobs/{job['id']}/result"
