"""`POST /classify/video` in the embedded mode (LocalJobs): real clips made with PyAV from
the test photos (tests/conftest.py) and the shared 72-frame clip, the real detector and
the shipped `compact` classifier. The same job on a Celery worker is in
tests/integration/test_celery_jobs.py."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from service.settings import DEFAULT_MODEL_STORE, Settings

DATA = Path(__file__).resolve().parents[1] / "data"
SINGLE_FACE = DATA / "single_face.mp4"  # the shared images' clip, copied (MIT)

Clip = Callable[..., bytes]


@pytest.fixture(scope="module")
def settings() -> Settings:
    return Settings(
        backend="local",
        model_store=DEFAULT_MODEL_STORE,
        models=["compact"],
        jobs="local",
        max_video_bytes=1024 * 1024,
    )


def video(data: bytes, name: str = "clip.mp4") -> dict[str, Any]:
    return {"video": (name, data, "video/mp4")}


def result(client: TestClient, data: bytes, **params: Any) -> dict[str, Any]:
    r = client.post("/classify/video", files=video(data), params={"wait": 60, **params})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/json"
    return dict(r.json())


def test_the_shared_clip_is_one_track(client: TestClient) -> None:
    body = result(client, SINGLE_FACE.read_bytes())
    assert body["kind"] == "video" and body["fps"] == 5.0
    assert body["video"]["frames"] == 72 and body["video"]["width"] == 640
    assert body["model"]["name"] == "compact"
    assert body["complete"] is True
    # 2.4 s at 5 frames a second: 12 sampled frames, the face in every one, one track
    assert [f["time"] for f in body["frames"]] == pytest.approx([i * 0.2 for i in range(12)])
    assert all(f["tracks"] == [1] for f in body["frames"])
    (track,) = body["tracks"]
    assert track["id"] == 1 and len(track["frames"]) == 12
    assert (track["start"], track["end"]) == (0.0, 2.2)
    for frame in track["frames"]:
        assert sum(frame["probabilities"].values()) == pytest.approx(1.0, abs=1e-3)
        assert frame["expression"] == max(frame["probabilities"], key=frame["probabilities"].get)
        assert frame["box"]["width"] > 50 and frame["score"] > 0.8
    # without a sequence model the track's label is its frames' mean
    assert body["label_source"] == track["label_source"] == "mean"
    assert body["sequence_model"] is None
    mean = {
        c: sum(f["probabilities"][c] for f in track["frames"]) / 12 for c in track["probabilities"]
    }
    assert track["probabilities"] == pytest.approx(mean, abs=2e-3)

    job = client.get(f"/jobs/{body['id']}").json()
    assert job["status"] == "succeeded" and job["progress"] == {
        "done": 12,
        "total": 12,
        "unit": "frames",
    }
    assert job["params"] == {"fps": 5.0, "model": None, "max_faces": 5}
    every = result(client, SINGLE_FACE.read_bytes(), fps=30)
    assert len(every["frames"]) == 72 and len(every["tracks"][0]["frames"]) == 72


def test_a_face_that_appears_midway(client: TestClient, clip: Clip) -> None:
    """1 s without a face, then 1 s of the astronaut: empty frames, then one track."""
    body = result(client, clip(["blank", "astronaut.jpg"], seconds=1.0))
    tracks = [f["tracks"] for f in body["frames"]]
    assert tracks == [[]] * 5 + [[1]] * 5
    (track,) = body["tracks"]
    assert track["start"] == 1.0 and track["expression"] == "happy"

    # two people one after the other: two tracks
    body = result(client, clip(["astronaut.jpg", "grace_hopper.jpg"], seconds=1.0), fps=2)
    assert [f["tracks"] for f in body["frames"]] == [[1], [1], [2], [2]]


def test_timeline_picture(client: TestClient, clip: Clip) -> None:
    body = result(client, clip(["blank", "astronaut.jpg"], seconds=1.0))
    assert body["timeline_url"] == f"/jobs/{body['id']}/result?format=png"
    r = client.get(body["timeline_url"])
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    picture = Image.open(io.BytesIO(r.content))
    assert picture.width == 900 and picture.height > 150
    assert client.get(f"/jobs/{body['id']}/result", headers={"Accept": "image/png"}).content == (
        r.content
    )
    r = client.get(
        f"/jobs/{body['id']}/result", headers={"Accept": "image/png"}, params={"format": "json"}
    )
    assert r.json()["id"] == body["id"]


def test_progress_and_uploads_gone(client: TestClient, clip: Clip) -> None:
    r = client.post("/classify/video", files=video(clip(["astronaut.jpg"], seconds=2.0)))
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["kind"] == "video" and job["status"] in ("queued", "running", "succeeded")
    done = client.get(f"/jobs/{job['id']}/result", params={"wait": 60})
    assert done.status_code == 200
    status = client.get(f"/jobs/{job['id']}").json()
    assert status["progress"]["done"] == status["progress"]["total"] == 10
    # the upload lives only as long as the job
    store = client.app.state.services.jobs.memory  # type: ignore[attr-defined]
    assert store._jobs[job["id"]].inputs is None
    assert client.app.state.services.jobs.retained_pixels == 0  # type: ignore[attr-defined]


@pytest.mark.parametrize("container", ["webm", "avi"])
def test_other_containers(client: TestClient, clip: Clip, container: str) -> None:
    data = clip(["astronaut.jpg"], seconds=1.0, container=container)
    body = result(client, data)
    assert len(body["tracks"]) == 1 and len(body["frames"]) == 5


def test_bad_input_is_a_clear_4xx(
    client: TestClient, clip: Clip, photo: Callable[[str], bytes], assert_problem: Any
) -> None:
    mp4 = clip(["astronaut.jpg"], seconds=1.0)
    post = client.post
    assert_problem(post("/classify/video", files=video(mp4[: len(mp4) // 2])), 422, "invalid-video")
    assert_problem(post("/classify/video", files=video(b"")), 422, "invalid-video")
    assert_problem(
        post("/classify/video", files=video(photo("astronaut.jpg"), "a.jpg")),
        415,
        "unsupported-video",
    )
    assert_problem(post("/classify/video", files=video(b"hello" * 100)), 415, "unsupported-video")
    assert_problem(
        post("/classify/video", files=video(bytes(1024 * 1024 + 1))), 413, "payload-too-large"
    )
    other = {"image": ("clip.mp4", mp4, "video/mp4")}
    assert_problem(post("/classify/video", files=other), 400, "missing-image")
    assert_problem(
        post("/classify/video", content=mp4, headers={"Content-Type": "video/mp4"}),
        415,
        "unsupported-media-type",
    )
    for params, status, slug in [
        ({"fps": 0}, 422, "invalid-request"),
        ({"fps": 31}, 422, "invalid-request"),
        ({"fps": "x"}, 422, "invalid-request"),
        ({"max_faces": 0}, 422, "invalid-request"),
        ({"max_faces": 51}, 422, "invalid-request"),
        ({"model": "nope"}, 404, "unknown-model"),
    ]:
        assert_problem(post("/classify/video", files=video(mp4), params=params), status, slug)


def test_limits_of_pixels_and_duration(clip: Clip, assert_problem: Any) -> None:
    from service.app import create_app

    small = {"max_video_pixels": 320 * 240 - 1}
    short = {"max_video_seconds": 1.5}
    pillow_limit = Image.MAX_IMAGE_PIXELS  # create_app sets it process-wide
    try:
        for limit, slug in [(small, "video-too-large"), (short, "video-too-long")]:
            settings = Settings(model_store=DEFAULT_MODEL_STORE, models=["compact"], **limit)
            with TestClient(create_app(settings), raise_server_exceptions=False) as c:
                r = c.post("/classify/video", files=video(clip(["blank"], seconds=2.0)))
                assert_problem(r, 413, slug)
    finally:
        Image.MAX_IMAGE_PIXELS = pillow_limit


def test_tracks_are_labelled_by_the_sequence_model(sequence_store: Path) -> None:
    """With a `sequence` archive in the store, each track's label is its answer on the
    track's crops (an untrained test archive here: only the plumbing is checked)."""
    from service.app import create_app

    settings = Settings(model_store=sequence_store, jobs="local")
    pillow_limit = Image.MAX_IMAGE_PIXELS
    try:
        with TestClient(create_app(settings), raise_server_exceptions=False) as c:
            body = result(c, SINGLE_FACE.read_bytes(), fps=2)
            assert body["label_source"] == "sequence"
            assert body["sequence_model"] == {"name": "sequence", "version": "0.0-test"}
            (track,) = body["tracks"]
            assert track["label_source"] == "sequence"
            assert sum(track["probabilities"].values()) == pytest.approx(1.0, abs=1e-3)
            assert track["expression"] in track["probabilities"]
            ready = c.get("/readyz").json()["capabilities"]["video"]
            assert ready["ok"] and "'sequence'" in ready["detail"]
            models = {m["name"]: m["kind"] for m in c.get("/models").json()["models"]}
            assert models == {"compact": "classifier", "sequence": "sequence"}
    finally:
        Image.MAX_IMAGE_PIXELS = pillow_limit


def test_a_job_that_runs_too_long_fails_cleanly(clip: Clip) -> None:
    """A clip that takes longer than FER_JOB_TIMEOUT: the job fails with `job-timeout`
    (not a 500, not a hang), and its result is 409 `job-failed`."""
    from service.app import create_app

    settings = Settings(
        model_store=DEFAULT_MODEL_STORE, models=["compact"], job_timeout=0.3, video_batch=1
    )
    pillow_limit = Image.MAX_IMAGE_PIXELS
    try:
        with TestClient(create_app(settings), raise_server_exceptions=False) as c:
            long = clip(["astronaut.jpg", "grace_hopper.jpg"], seconds=3.0, rate=10)
            r = c.post("/classify/video", files=video(long), params={"fps": 10, "wait": 30})
            job = c.get(r.headers["location"]).json()
            assert job["status"] == "failed", job
            assert job["error"]["type"].endswith(":job-timeout")
            r = c.get(f"/jobs/{job['id']}/result")
            assert r.status_code == 409 and r.json()["type"].endswith(":job-failed")
    finally:
        Image.MAX_IMAGE_PIXELS = pillow_limit
