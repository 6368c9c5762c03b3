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


def test_torchserve_batching_option(capsys: pytest.CaptureFixture[str]) -> None:
    parser = build_parser()
    assert parser.parse_args(["torchserve", "--batching", "8:1"]).batching == (8, 1)
    assert parser.parse_args(["torchserve"]).batching is None  # the archives' own
    for bad in ("8", "0:1", "8:-1", "eight:1"):
        with pytest.raises(SystemExit):
            parser.parse_args(["torchserve", "--batching", bad])
        assert "SIZE:DELAY_MS" in capsys.readouterr().err
