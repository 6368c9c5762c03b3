"""The real app (RetinaFace, LocalBackend over the repository's model store) for API tests.

`client` starts one app per test module (its lifespan loads the models once); requests go
through Starlette's TestClient, in process. `live(app)` serves an app over real sockets
(uvicorn in a thread), for what only a real server shows: slow and vanishing clients, fuzzing.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient
from PIL import Image

from service.app import create_app
from service.catalog import scan
from service.settings import DEFAULT_MODEL_STORE, Settings

DATA = Path(__file__).resolve().parents[1] / "data"

#: Limits small enough that the bad-input tests stay fast.
MAX_UPLOAD_BYTES = 2 * 1024 * 1024
MAX_PIXELS = 12_000_000


def api_settings(**overrides: object) -> Settings:
    """Settings of the API tests: the repository's model store, the local backend."""
    values: dict[str, object] = {
        "backend": "local",
        "model_store": DEFAULT_MODEL_STORE,
        "max_upload_bytes": MAX_UPLOAD_BYTES,
        "max_pixels": MAX_PIXELS,
        **overrides,
    }
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def settings() -> Settings:
    """The settings of the module's app."""
    return api_settings()


@pytest.fixture(scope="module")
def client(settings: Settings) -> Iterator[TestClient]:
    """A started app; one per test module."""
    if not any(e.is_classifier for e in scan(settings.model_store).values()):
        pytest.fail(f"no classifier archive in {settings.model_store}: run `make models`")
    pillow_limit = Image.MAX_IMAGE_PIXELS  # create_app sets it process-wide
    try:
        with TestClient(create_app(settings), raise_server_exceptions=False) as c:
            yield c
    finally:
        Image.MAX_IMAGE_PIXELS = pillow_limit


@pytest.fixture(scope="session")
def photo() -> Callable[[str], bytes]:
    """The bytes of a test photo in tests/data."""
    return lambda name: (DATA / name).read_bytes()


ProblemCheck = Callable[[httpx.Response, int, str], dict[str, object]]


def _assert_problem(response: httpx.Response, status: int, slug: str) -> dict[str, object]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["type"] == f"urn:fer-service:problem:{slug}", body
    assert body["status"] == status
    assert body["title"] and body["detail"]
    return dict(body)


@pytest.fixture(scope="session")
def assert_problem() -> ProblemCheck:
    """Check that a response is a problem+json document of a status and type; returns it."""
    return _assert_problem


@contextlib.contextmanager
def live(app: FastAPI) -> Iterator[str]:
    """`app` served by uvicorn on a free loopback port in a thread; yields its base URL."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="info", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    pillow_limit = Image.MAX_IMAGE_PIXELS
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)
        Image.MAX_IMAGE_PIXELS = pillow_limit


Serve = Callable[[FastAPI], contextlib.AbstractContextManager[str]]


@pytest.fixture(scope="session")
def serve() -> Serve:
    """`live`: serve an app over real sockets for the length of a `with` block."""
    return live
