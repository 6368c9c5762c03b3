"""The TorchServe config that `service.launcher` writes (no TorchServe is started here)."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

from service.launcher.config import (
    CONFIG_NAME,
    ModelSettings,
    TorchServeConfig,
    TorchServeError,
    free_ports,
    local_config,
    read_properties,
)
from service.launcher.process import TorchServe

PROJECT_CONFIG = Path(__file__).resolve().parents[2] / "model_store" / CONFIG_NAME


def fake_archive(store: Path, name: str) -> None:
    manifest = {"model": {"modelName": name, "handler": "classifier.py"}}
    with zipfile.ZipFile(store / f"{name}.mar", "w") as z:
        z.writestr("MAR-INF/MANIFEST.json", json.dumps(manifest))


@pytest.fixture
def store(tmp_path: Path) -> Path:
    for name in ("compact", "ensemble"):
        fake_archive(tmp_path, name)
    return tmp_path


def test_project_config_has_the_production_settings() -> None:
    props = read_properties(PROJECT_CONFIG)
    assert props["inference_address"] == "http://0.0.0.0:8080"
    assert props["management_address"] == "http://0.0.0.0:8081"
    assert props["metrics_address"] == "http://0.0.0.0:8082"
    assert props["metrics_mode"] == "prometheus"
    assert props["disable_token_authorization"] == "true"
    assert props["enable_envvars_config"] == "true"
    assert props["install_py_dep_per_model"] == "false"
    assert props["load_models"] == "all"
    assert int(props["default_workers_per_model"]) >= 1
    assert int(props["job_queue_size"]) >= 1
    assert int(props["default_response_timeout"]) >= 1


def test_local_config_keeps_settings_and_binds_loopback(store: Path) -> None:
    cfg = local_config(store, PROJECT_CONFIG, ports=[1, 2, 3, 4, 5])
    props = cfg.properties()
    base = read_properties(PROJECT_CONFIG)
    assert props["inference_address"] == "http://127.0.0.1:1"
    assert props["management_address"] == "http://127.0.0.1:2"
    assert props["metrics_address"] == "http://127.0.0.1:3"
    assert (props["grpc_inference_port"], props["grpc_management_port"]) == ("4", "5")
    assert props["job_queue_size"] == base["job_queue_size"]
    assert props["disable_token_authorization"] == "true"
    assert props["enable_envvars_config"] == "true"
    assert props["install_py_dep_per_model"] == "false"
    assert props["metrics_mode"] == "prometheus"
    assert props["model_store"] == str(store.resolve())
    assert props["load_models"] == "all"
    assert cfg.archives() == {"compact": "compact.mar", "ensemble": "ensemble.mar"}
    assert cfg.inference_url == "http://127.0.0.1:1"


def test_explicit_models_and_unknown_ones(store: Path) -> None:
    cfg = local_config(store, models=["compact"])
    assert cfg.properties()["load_models"] == "compact=compact.mar"
    with pytest.raises(TorchServeError, match="derl"):
        local_config(store, models=["derl"])


def test_batching_overrides_go_through_the_management_api(store: Path) -> None:
    cfg = TorchServeConfig(
        model_store=store, settings={"ensemble": ModelSettings(workers=2, batch_size=8)}
    )
    props = cfg.properties()
    assert props["load_models"] == "compact=compact.mar"
    assert props["enable_model_api"] == "true"
    worker_only = TorchServeConfig(model_store=store, settings={"x": ModelSettings(workers=3)})
    assert "enable_model_api" not in worker_only.properties()


def test_token_auth_is_only_turned_off_on_loopback(store: Path) -> None:
    assert TorchServeConfig(model_store=store).properties()["disable_token_authorization"]
    public = TorchServeConfig(model_store=store, host="0.0.0.0").properties()
    assert "disable_token_authorization" not in public
    assert public["inference_address"] == "http://0.0.0.0:8080"
    assert TorchServeConfig(model_store=store, host="::1").inference_url == "http://[::1]:8080"


def test_private_environment(store: Path, tmp_path: Path) -> None:
    server = TorchServe(
        TorchServeConfig(model_store=store),
        workdir=tmp_path / "ts",
        env={"TS_CONFIG_FILE": "/elsewhere", "PATH": "/bin"},
    )
    env = server.environment()
    assert "TS_CONFIG_FILE" not in env
    assert env["TMPDIR"] == env["TEMP"] == str(tmp_path / "ts" / "tmp")
    assert env["LOG_LOCATION"] == str(tmp_path / "ts" / "logs")
    server.stop()  # never started: a no-op


def test_free_ports_are_distinct() -> None:
    ports = free_ports(5)
    assert len(set(ports)) == 5


def test_cli_torchserve_command() -> None:
    from service.cli import build_parser

    args = build_parser().parse_args(
        ["torchserve", "--models", "compact", "--port", "9080", "--grpc-ports", "9070", "9071"]
    )
    assert args.func.__name__ == "cmd_torchserve"
    assert (args.models, args.port, args.grpc_ports) == (["compact"], 9080, [9070, 9071])
    assert args.host == "127.0.0.1" and args.management_port is None


def test_local_config_batching_applies_to_every_model(store: Path) -> None:
    cfg = local_config(store, batching=(8, 1))
    assert {name: (m.batch_size, m.max_batch_delay_ms) for name, m in cfg.settings.items()} == {
        name: (8, 1) for name in cfg.archives()
    }
    assert cfg.properties()["enable_model_api"] == "true"  # registered through the API
    assert local_config(store).settings == {}  # the archives' own batching
