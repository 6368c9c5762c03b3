"""GET /models and GET /models/{name}."""

from __future__ import annotations

from fastapi.testclient import TestClient

CLASSES = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]


def test_models_lists_the_store(client: TestClient) -> None:
    r = client.get("/models")
    assert r.status_code == 200
    body = r.json()
    by_name = {m["name"]: m for m in body["models"]}
    assert "compact" in by_name
    compact = by_name["compact"]
    assert compact["kind"] == "classifier" and compact["classes"] == CLASSES
    assert compact["input"]["size"] == 48 and compact["input"]["color"] == "gray"
    assert compact["input"]["framing"] == "fer2013"
    assert compact["ready"] is True and compact["version"]
    assert body["default"] in by_name and by_name[body["default"]]["default"] is True
    if "derl" in by_name:
        assert body["default"] == "derl"


def test_one_model(client: TestClient) -> None:
    assert client.get("/models/compact").json()["name"] == "compact"


def test_unknown_model(client: TestClient, assert_problem) -> None:
    assert_problem(client.get("/models/nope"), 404, "unknown-model")
