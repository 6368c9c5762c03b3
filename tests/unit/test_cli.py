"""The `fer-service` command line."""

from __future__ import annotations

import pytest
import yaml

from service.cli import build_parser, main


def test_commands() -> None:
    parser = build_parser()
    args = parser.parse_args(["serve", "--host", "0.0.0.0", "--port", "9000"])
    assert (args.host, args.port, args.func.__name__) == ("0.0.0.0", 9000, "cmd_serve")
    assert parser.parse_args(["openapi"]).func.__name__ == "cmd_openapi"
    with pytest.raises(SystemExit):
        parser.parse_args([])


def test_openapi_prints_yaml(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["openapi"]) == 0
    spec = yaml.safe_load(capsys.readouterr().out)
    assert spec["info"]["title"] == "fer-service" and "/classify" in spec["paths"]
