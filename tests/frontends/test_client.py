"""service/client.py against the real app: the sync client over HTTP to a running gateway
(tests/frontends/conftest.py), the async one on apps started in process (`embedded`).
No part of the API is mocked; the errors, 503s and failed jobs are the app's own."""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import httpx
import pytest
from PIL import Image
from served import DATA, GATEWAY_DEFAULT, Gateway

from service.client import (
    BadRequestError,
    Client,
    JobFailedError,
    JobTimeoutError,
    NotFoundError,
    UnavailableError,
    embedded,
    retry_after_seconds,
)
from service.schemas import ClassifyResponse, JobStatus
from service.settings import DEFAULT_MODEL_STORE, Settings

pytestmark = pytest.mark.integration  # a real gateway, in a process of its own

FACE, EXPRESSION, MULTI = DATA / "astronaut.jpg", DATA / "grace_hopper.jpg", DATA / "multi_face.jpg"


def png_size(data: bytes) -> tuple[int, int]:
    image = Image.open(io.BytesIO(data))
    assert image.format == "PNG"
    return image.size


def test_classify_gives_typed_faces(gateway: Gateway) -> None:
    with Client(gateway.url) as client:
        answer = client.classify(MULTI)
        assert isinstance(answer, ClassifyResponse)
        assert len(answer.faces) == 5 and answer.model.name == GATEWAY_DEFAULT
        assert answer.image.width == 800 and answer.image.format == "JPEG"
        areas = [f.box.width * f.box.height for f in answer.faces]
        assert areas == sorted(areas, reverse=True)
        for face in answer.faces:
            assert sum(face.probabilities.values()) == pytest.approx(1.0, abs=1e-4)
            assert face.expression == max(face.probabilities, key=face.probabilities.__getitem__)
        # bytes work as well as paths; the options reach the API
        two = client.classify(MULTI.read_bytes(), model="derl", max_faces=2, neutral=True)
        assert len(two.faces) == 2 and two.model.name == "derl"
        assert all(f.neutral_face for f in two.faces)
        turned = client.classify(MULTI, frontalize=True, frontalize_min_yaw=0)
        assert all(f.frontalized for f in turned.faces) and len(turned.faces) == 5
        assert turned.frontalizer is not None and turned.frontalizer.name == "frontalize"
        assert not any(f.frontalized for f in answer.faces) and answer.frontalizer is None
        models = client.models()
        assert models.default == GATEWAY_DEFAULT
        assert {m.name: m.kind for m in models.models} == {
            "compact": "classifier",
            "derl": "derl",
            "tdgan": "transfer",
            "frontalize": "frontalizer",
        }
        assert client.model("tdgan").ready
        assert client.health().status == "ok" and client.ready().status == "ready"


def test_problems_are_typed_exceptions(gateway: Gateway, tmp_path: Path) -> None:
    with Client(gateway.url) as client:
        with pytest.raises(NotFoundError) as unknown:
            client.classify(FACE, model="resnet")
        assert unknown.value.slug == "unknown-model" and unknown.value.status == 404
        assert unknown.value.problem.title == "No such model"
        assert "resnet" in unknown.value.problem.detail
        text = tmp_path / "notes.jpg"
        text.write_text("no image here")
        with pytest.raises(BadRequestError) as bad:
            client.classify(text)
        assert bad.value.slug == "unsupported-image" and bad.value.status == 415
        with pytest.raises(BadRequestError) as invalid:
            client.classify(FACE, max_faces=0)
        assert invalid.value.slug == "invalid-request"
        with pytest.raises(NotFoundError) as job:
            client.job("0" * 32)
        assert job.value.slug == "job-not-found"


def test_transfer_job(gateway: Gateway) -> None:
    seen: list[JobStatus] = []
    with Client(gateway.url) as client:
        png = client.transfer(FACE, EXPRESSION, timeout=30, on_update=seen.append)
        assert png_size(png) == (64, 64)
        assert seen and seen[-1].status == "succeeded" and seen[-1].kind == "transfer"
        job_id = seen[-1].id
        info = client.result_info(job_id)
        assert info.model.name == "tdgan" and info.image.width == 64
        assert set(info.inputs) == {"face", "expression"}
        client.delete(job_id)
        with pytest.raises(NotFoundError):
            client.job(job_id)


def test_failed_job_raises_its_problem(gateway: Gateway) -> None:
    with Client(gateway.url) as client, pytest.raises(JobFailedError) as failed:
        client.transfer(FACE, DATA / "no_face.jpg", timeout=30)
    assert failed.value.slug == "no-face" and failed.value.status == 422
    assert failed.value.job.status == "failed"


def test_sync_client_retries_and_times_out(busy_gateway: Gateway) -> None:
    with Client(busy_gateway.url, retries=0) as client:
        first = client.submit_transfer(FACE, EXPRESSION)
        client.submit_transfer(FACE, EXPRESSION)
        with pytest.raises(UnavailableError) as full:
            client.submit_transfer(FACE, EXPRESSION)
        assert full.value.slug == "queue-full" and full.value.retry_after == 1.0
        with pytest.raises(JobTimeoutError) as timeout:
            client.wait(first.id, timeout=0.5, interval=0.2)
        assert timeout.value.job.status in ("queued", "running")
        client.flows.retries = 5
        started = time.monotonic()
        third = client.submit_transfer(FACE, EXPRESSION)  # retried until there is room
        assert time.monotonic() - started >= 1.0 and third.status == "queued"
        assert client.wait(third.id, timeout=30, interval=0.2).status == "succeeded"


def slow_settings(transfer_store: Callable[[float], Path], **overrides: object) -> Settings:
    """The embedded app over a store whose transfer network takes 2 s a call."""
    values: dict[str, object] = {"model_store": transfer_store(2.0), "jobs": "local"}
    return Settings(**{**values, **overrides})  # type: ignore[arg-type]


def test_wait_times_out(transfer_store: Callable[[float], Path]) -> None:
    async def run() -> None:
        async with embedded(slow_settings(transfer_store)) as client:
            job = await client.submit_transfer(FACE, EXPRESSION)
            started = time.monotonic()
            with pytest.raises(JobTimeoutError) as timeout:
                await client.wait(job.id, timeout=0.6, interval=0.2)
            assert 0.3 < time.monotonic() - started < 1.5
            assert timeout.value.job.id == job.id
            assert timeout.value.job.status in ("queued", "running")
            done = await client.wait(job.id, timeout=30, interval=0.2)
            assert done.status == "succeeded"
            assert png_size(await client.result(job.id)) == (64, 64)

    asyncio.run(run())


def test_503_with_retry_after_is_retried(transfer_store: Callable[[float], Path]) -> None:
    """One job runs and one waits (FER_JOB_QUEUE_SIZE=1): a third is refused with 503
    `queue-full` and Retry-After: 1 until the first finishes; the client retries it."""

    async def run() -> None:
        settings = slow_settings(transfer_store, job_queue_size=1, job_workers=1, retry_after=1)
        async with embedded(settings) as client:
            first = await client.submit_transfer(FACE, EXPRESSION)
            await client.submit_transfer(FACE, EXPRESSION)
            client.flows.retries = 0
            with pytest.raises(UnavailableError) as full:
                await client.submit_transfer(FACE, EXPRESSION)
            assert full.value.slug == "queue-full" and full.value.retry_after == 1.0
            client.flows.retries = 5
            started = time.monotonic()
            third = await client.submit_transfer(FACE, EXPRESSION)  # retried until accepted
            assert time.monotonic() - started >= 1.0
            assert third.status == "queued"
            assert (await client.job(first.id)).status == "succeeded"

    asyncio.run(run())


def test_503_persisting_raises_after_the_retries() -> None:
    """The repository's model store has no transfer model: 503 `model-not-ready`."""

    async def run() -> None:
        settings = Settings(model_store=DEFAULT_MODEL_STORE, jobs="local", retry_after=1)  # type: ignore[call-arg]
        async with embedded(settings) as client:
            client.flows.retries = 2
            started = time.monotonic()
            with pytest.raises(UnavailableError) as unavailable:
                await client.submit_transfer(FACE, EXPRESSION)
            assert time.monotonic() - started >= 2.0  # two waits of Retry-After: 1
            assert unavailable.value.slug == "model-not-ready"
            assert unavailable.value.retry_after == 1.0

    asyncio.run(run())


def test_retry_after_in_seconds_or_as_a_date() -> None:
    def answer(value: str) -> httpx.Response:
        return httpx.Response(503, headers={"Retry-After": value})

    assert retry_after_seconds(answer("7")) == 7.0
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    assert 25 < (retry_after_seconds(answer(later)) or 0) <= 30
    assert retry_after_seconds(answer("soon")) is None
    assert retry_after_seconds(httpx.Response(503)) is None
