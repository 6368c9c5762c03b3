"""openapi.yaml at the repository root is the app's own schema."""

from __future__ import annotations

from pathlib import Path

import yaml
from fastapi.testclient import TestClient

from service.cli import openapi_yaml

OPENAPI = Path(__file__).resolve().parents[2] / "openapi.yaml"


def test_openapi_yaml_is_up_to_date() -> None:
    current = openapi_yaml()
    assert yaml.safe_load(OPENAPI.read_text()) == yaml.safe_load(current), (
        "openapi.yaml differs from the app's schema: run `fer-service openapi -o openapi.yaml`"
    )


def test_errors_are_documented_as_problems() -> None:
    spec = yaml.safe_load(openapi_yaml())
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            for status, response in operation["responses"].items():
                if int(status) >= 400 and path != "/readyz":
                    content = response["content"]
                    assert list(content) == ["application/problem+json"], (method, path, status)
                    assert content["application/problem+json"]["examples"]
    classify = spec["paths"]["/classify"]["post"]
    assert {"multipart/form-data", "image/*"} <= set(classify["requestBody"]["content"])
    assert spec["components"]["schemas"]["ClassifyResponse"]["examples"]


def _refs(node: object) -> list[str]:
    if isinstance(node, dict):
        return [v for k, v in node.items() if k == "$ref"] + [
            r for v in node.values() for r in _refs(v)
        ]
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []


def test_every_reference_resolves() -> None:
    """`#/components/schemas/JobResult` was referred to but never defined."""
    spec = yaml.safe_load(openapi_yaml())
    schemas = spec["components"]["schemas"]
    refs = _refs(spec)
    assert "#/components/schemas/JobResult" in refs
    for ref in refs:
        assert ref.startswith("#/components/schemas/") and ref.split("/")[-1] in schemas, ref


def test_405_lists_every_method_of_the_path(client: TestClient, assert_problem) -> None:
    r = client.put(f"/jobs/{'0' * 32}")
    assert_problem(r, 405, "method-not-allowed")
    assert {"GET", "DELETE"} <= {m.strip() for m in r.headers["allow"].split(",")}
    r = client.get("/classify")
    assert_problem(r, 405, "method-not-allowed")
    assert r.headers["allow"] == "POST"


def test_api_keys_are_documented() -> None:
    spec = yaml.safe_load(openapi_yaml())
    assert set(spec["components"]["securitySchemes"]) == {"bearer", "apiKey"}
    for path, operations in spec["paths"].items():
        for operation in operations.values():
            guarded = path not in ("/healthz", "/readyz", "/metrics")
            assert ("security" in operation) == guarded, path
            assert {"401", "403", "429"} <= set(map(str, operation["responses"])) or not guarded
