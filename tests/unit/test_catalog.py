"""service.catalog: reading the model store and choosing the default classifier."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

from service.catalog import default_classifier, scan


def write_archive(store: Path, name: str, kind: str = "classifier", version: str = "1.0") -> Path:
    """An archive with just the metadata the gateway reads (enough for the catalog)."""
    path = store / f"{name}.mar"
    manifest = {"model": {"modelName": name, "modelVersion": version, "handler": "h.py"}}
    metadata = {
        "kind": kind,
        "classes": ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"],
        "input": {"size": 48, "mean": 0.5, "std": 0.25, "framing": "fer2013"},
        "net": {"module": name, "file": f"{name}.py"},
    }
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("MAR-INF/MANIFEST.json", json.dumps(manifest))
        z.writestr("metadata.json", json.dumps(metadata))
    return path


@pytest.mark.parametrize(
    ("archives", "default"),
    [
        ([("compact", "classifier"), ("derl", "derl"), ("ensemble", "classifier")], "derl"),
        ([("compact", "classifier"), ("ensemble", "classifier")], "compact"),
        ([("zeta", "classifier"), ("ensemble", "classifier")], "ensemble"),
        ([("tdgan", "transfer")], None),
        ([], None),
    ],
)
def test_default_classifier(
    tmp_path: Path, archives: list[tuple[str, str]], default: str | None
) -> None:
    for name, kind in archives:
        write_archive(tmp_path, name, kind)
    assert default_classifier(scan(tmp_path)) == default


def test_configured_default_must_be_a_classifier(tmp_path: Path) -> None:
    write_archive(tmp_path, "compact")
    write_archive(tmp_path, "ensemble")
    write_archive(tmp_path, "tdgan", "transfer")
    entries = scan(tmp_path)
    assert default_classifier(entries, "ensemble") == "ensemble"
    assert default_classifier(entries, "tdgan") == "compact"
    assert default_classifier(entries, "missing") == "compact"


def test_scan_reads_metadata_and_skips_damaged_archives(tmp_path: Path) -> None:
    write_archive(tmp_path, "compact", version="2.1")
    (tmp_path / "broken.mar").write_bytes(b"not a zip")
    entries = scan(tmp_path)
    assert list(entries) == ["compact"]
    entry = entries["compact"]
    assert entry.version == "2.1" and entry.input.size == 48 and entry.is_classifier


def test_scan_only_the_named_models(tmp_path: Path) -> None:
    write_archive(tmp_path, "compact")
    write_archive(tmp_path, "ensemble")
    assert list(scan(tmp_path, ["ensemble", "absent"])) == ["ensemble"]
    assert scan(tmp_path / "missing") == {}
