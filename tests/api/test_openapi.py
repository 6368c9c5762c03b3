"""openapi.yaml at the repository root is the app's own schema."""

from __future__ import annotations

from pathlib import Path

import yaml

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
