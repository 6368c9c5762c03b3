"""`POST /transfer` and `/jobs` in the embedded mode: LocalJobs in the gateway, no Redis.

The app is the real one (RetinaFace, LocalBackend) over a model store whose `tdgan.mar` is
a tiny untrained transfer network (tests/conftest.py): every step of a transfer job runs
for real, only the network is a stand-in. The same behaviour with Celery workers and
Redis is tested in tests/integration/test_celery_jobs.py.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from service.app import create_app
from service.settings import Settings

FACE, EXPRESSION = "astronaut.jpg", "grace_hopper.jpg"


def uploads(
    photo: Callable[[str], bytes], face: str = FACE, expression: str = EXPRESSION
) -> dict[str, Any]:
    return {"face": (face, photo(face)), "expression": (expression, photo(expression))}


def started(settings: Settings) -> Iterator[TestClient]:
    pillow_limit = Image.MAX_IMAGE_PIXELS  # create_app sets it process-wide
    try:
        with TestClient(create_app(settings), raise_server_exceptions=False) as c:
            yield c
    finally:
        Image.MAX_IMAGE_PIXELS = pillow_limit


def local_settings(store: Path, **overrides: Any) -> Settings:
    return Settings(model_store=store, jobs="local", **overrides)


@pytest.fixture(scope="module")
def local(transfer_store: Callable[[float], Path]) -> Iterator[TestClient]:
    """The embedded app with the test tdgan archive."""
    yield from started(local_settings(transfer_store(0.0)))


def test_job_lifecycle(local: TestClient, photo: Callable[[str], bytes]) -> None:
    r = local.post("/transfer", files=uploads(photo))
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["status"] in ("queued", "running", "succeeded")
    assert r.headers["location"] == job["url"] and job["url"].endswith(f"/jobs/{job['id']}")
    assert job["kind"] == "transfer" and job["params"] == {"face_index": 0, "expression_index": 0}

    r = local.get(f"/jobs/{job['id']}/result", params={"wait": 20})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(r.content)).size == (64, 64)

    r = local.get(f"/jobs/{job['id']}/result", headers={"Accept": "application/json"})
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    result = r.json()
    assert result["model"] == {"name": "tdgan", "version": "0.0-test"}
    assert result["image"]["width"] == 64 and result["image"]["url"].endswith("/result")
    assert set(result["inputs"]) == {"face", "expression"}
    for source in result["inputs"].values():
        assert source["faces_found"] == 1 and source["index"] == 0 and source["score"] > 0.8
    assert result["inputs"]["face"]["image"] == {"width": 512, "height": 512, "format": "JPEG"}

    status = local.get(f"/jobs/{job['id']}").json()
    assert status["status"] == "succeeded" and status["attempts"] == 1
    assert status["error"] is None and status["result_url"] == result["image"]["url"]
    assert status["created_at"] <= status["started_at"] <= status["finished_at"]
    assert status["expires_at"] > status["finished_at"]

    assert local.delete(f"/jobs/{job['id']}").status_code == 204
    assert local.get(f"/jobs/{job['id']}").status_code == 404
    assert local.get(f"/jobs/{job['id']}/result").status_code == 404
    assert local.delete(f"/jobs/{job['id']}").status_code == 404


def test_wait_answers_with_the_result(local: TestClient, photo: Callable[[str], bytes]) -> None:
    r = local.post("/transfer", params={"wait": 20}, files=uploads(photo))
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/png" and "/jobs/" in r.headers["location"]
    r = local.post(
        "/transfer",
        params={"wait": 20},
        files=uploads(photo),
        headers={"Accept": "application/json"},
    )
    assert r.status_code == 200 and r.json()["kind"] == "transfer"


def test_idempotency_key_returns_the_same_job(
    local: TestClient, photo: Callable[[str], bytes]
) -> None:
    key = {"Idempotency-Key": "retry-me-1"}
    first = local.post("/transfer", files=uploads(photo), headers=key)
    again = local.post("/transfer", files=uploads(photo), headers=key)
    other = local.post("/transfer", files=uploads(photo), headers={"Idempotency-Key": "other"})
    assert first.status_code == again.status_code == other.status_code == 202
    assert again.json()["id"] == first.json()["id"] != other.json()["id"]
    assert again.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    # once the job is deleted, the key makes a new one
    local.delete(first.headers["location"])
    fresh = local.post("/transfer", files=uploads(photo), headers=key)
    assert fresh.status_code == 202 and fresh.json()["id"] != first.json()["id"]


def test_photo_without_the_face_fails_the_job(
    local: TestClient, photo: Callable[[str], bytes], assert_problem
) -> None:
    r = local.post("/transfer", params={"wait": 20}, files=uploads(photo, expression="no_face.jpg"))
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["status"] == "failed" and job["result_url"] is None
    assert job["error"]["type"] == "urn:fer-service:problem:no-face"
    assert job["error"]["detail"] == "the expression image has no face"
    body = assert_problem(local.get(f"/jobs/{job['id']}/result"), 409, "job-failed")
    assert body["error"] == job["error"]

    r = local.post("/transfer", params={"wait": 20, "face_index": 3}, files=uploads(photo))
    assert r.json()["error"]["detail"] == "the face image has 1 face; face_index 3 is out of range"


def test_bad_requests_fail_before_queueing(
    local: TestClient, photo: Callable[[str], bytes], assert_problem
) -> None:
    r = local.post("/transfer", files={"face": ("a.jpg", photo(FACE))})
    assert "'expression' is missing" in assert_problem(r, 400, "missing-image")["detail"]
    damaged = photo(FACE)[:2000]
    r = local.post("/transfer", files={"face": ("a.jpg", photo(FACE)), "expression": damaged})
    assert assert_problem(r, 422, "invalid-image")["detail"].startswith("the expression image:")
    r = local.post("/transfer", json={"face": "x"})
    assert_problem(r, 415, "unsupported-media-type")
    r = local.post("/transfer", params={"face_index": -1}, files=uploads(photo))
    assert_problem(r, 422, "invalid-request")
    r = local.post("/transfer", params={"wait": 61}, files=uploads(photo))
    assert_problem(r, 422, "invalid-request")


def test_unknown_jobs_are_404(local: TestClient, assert_problem) -> None:
    assert_problem(local.get("/jobs/nope"), 404, "job-not-found")
    assert_problem(local.get(f"/jobs/{'0' * 32}"), 404, "job-not-found")
    assert_problem(local.get(f"/jobs/{'0' * 32}/result"), 404, "job-not-found")
    assert_problem(local.delete(f"/jobs/{'0' * 32}"), 404, "job-not-found")


def test_readiness_reports_the_queue(local: TestClient) -> None:
    body = local.get("/readyz").json()
    assert body["checks"]["jobs"] == {"ok": True, "detail": "in-process: 0 running, 0 waiting"}
    assert body["capabilities"]["jobs"] == body["checks"]["jobs"]
    assert body["capabilities"]["transfer"]["ok"] is True
    assert body["capabilities"]["classify"]["ok"] is False  # this store has no classifier


def test_jobs_expire(
    transfer_store: Callable[[float], Path], photo: Callable[[str], bytes], assert_problem
) -> None:
    for c in started(local_settings(transfer_store(0.0), job_ttl=1)):
        r = c.post("/transfer", params={"wait": 20}, files=uploads(photo))
        location = r.headers["location"]
        assert c.get(location).status_code == 200
        time.sleep(1.1)
        assert_problem(c.get(location), 404, "job-not-found")


def test_queue_is_bounded(
    transfer_store: Callable[[float], Path], photo: Callable[[str], bytes], assert_problem
) -> None:
    """One job runs (slowly), one waits, the next is refused with 503 and Retry-After."""
    for c in started(local_settings(transfer_store(2.0), job_queue_size=1, job_workers=1)):
        first = c.post("/transfer", files=uploads(photo)).json()
        assert c.get(f"/jobs/{first['id']}/result", params={"wait": 0.5}).status_code == 409
        assert c.post("/transfer", files=uploads(photo)).status_code == 202
        r = c.post("/transfer", files=uploads(photo))
        assert_problem(r, 503, "queue-full")
        assert int(r.headers["retry-after"]) > 0


def test_transfer_without_a_tdgan_archive(
    client: TestClient, photo: Callable[[str], bytes], assert_problem
) -> None:
    """The repository's model store has no tdgan.mar yet: a clear 503, not a 500."""
    r = client.post("/transfer", files=uploads(photo))
    body = assert_problem(r, 503, "model-not-ready")
    assert "no 'tdgan' archive" in body["detail"]


def test_each_upload_is_decoded_once(
    local: TestClient, photo: Callable[[str], bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The route decodes the uploads to check them; the in-process job runs on those."""
    import service.pipeline

    decoded: list[int] = []
    decode = service.pipeline.decode

    def counting(data: bytes, *args: Any) -> Any:
        decoded.append(len(data))
        return decode(data, *args)

    monkeypatch.setattr(service.pipeline, "decode", counting)
    r = local.post("/transfer", params={"wait": 20}, files=uploads(photo))
    assert r.status_code == 200, r.text
    assert sorted(decoded) == sorted(len(photo(n)) for n in (FACE, EXPRESSION))


def test_frontalize_without_its_model_is_503(
    local: TestClient, photo: Callable[[str], bytes], assert_problem: Any
) -> None:
    """This store has a transfer model but no frontalizer: /frontalize says so at once."""
    files = {"face": (FACE, photo(FACE))}
    assert_problem(local.post("/frontalize", files=files), 503, "model-not-ready")


def test_waiting_jobs_keep_at_most_the_decode_budget(
    transfer_store: Callable[[float], Path], photo: Callable[[str], bytes]
) -> None:
    """Jobs waiting in the gateway keep their decoded uploads only within the decode
    budget (one job's worth here); the others decode theirs when they run, and succeed."""
    budget = 600_000  # one job: two 512x512 photos
    settings = local_settings(
        transfer_store(1.0), max_pixels=budget, decode_budget_pixels=budget, job_queue_size=8
    )
    for c in started(settings):
        jobs = c.app.state.services.jobs
        ids = [c.post("/transfer", files=uploads(photo)).json()["id"] for _ in range(3)]
        assert 0 < jobs.retained_pixels <= budget
        for job_id in ids:
            r = c.get(f"/jobs/{job_id}/result", params={"wait": 30})
            assert r.status_code == 200, r.text
        assert jobs.retained_pixels == 0
