"""The model store as the gateway sees it: what each `.mar` is, read from its metadata.

Both backends serve the same archives; the gateway learns names, versions, classes and the
input crop of each model from the archives themselves (`service.archive.read_manifest`),
never from the backend.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from service.archive import ArchiveMetadata, InputSpec, read_manifest

log = logging.getLogger(__name__)

#: Archive kinds that answer `/classify` (DeRL classifies through its residue branch).
CLASSIFIER_KINDS = ("classifier", "derl")

#: Preferred default classifiers, best first.
DEFAULT_PREFERENCE = ("derl", "compact")


@dataclass(frozen=True)
class ModelEntry:
    """One archive of the model store."""

    name: str
    version: str
    path: Path
    metadata: ArchiveMetadata

    @property
    def kind(self) -> str:
        return self.metadata.kind

    @property
    def classes(self) -> list[str]:
        return self.metadata.classes

    @property
    def input(self) -> InputSpec:
        return self.metadata.input

    @property
    def is_classifier(self) -> bool:
        return self.kind in CLASSIFIER_KINDS


def scan(store: Path, names: Iterable[str] | None = None) -> dict[str, ModelEntry]:
    """Every readable `.mar` in `store` by model name (only `names`, if given).

    An unreadable archive is logged and skipped, so one bad file cannot take the gateway
    down; a name asked for that is not in the store is logged too.
    """
    entries: dict[str, ModelEntry] = {}
    for path in sorted(store.glob("*.mar")) if store.is_dir() else []:
        try:
            manifest, metadata = read_manifest(path)
            model = manifest["model"]
            entry = ModelEntry(
                name=str(model["modelName"]),
                version=str(model.get("modelVersion", "")),
                path=path,
                metadata=metadata,
            )
        except Exception as exc:  # noqa: BLE001 - any damage to one archive
            log.error("skipping %s: cannot read its metadata: %s", path, exc)
            continue
        if entry.name in entries:
            log.error("skipping %s: model name %r already taken", path, entry.name)
            continue
        entries[entry.name] = entry
    if names is not None:
        wanted = list(names)
        for missing in sorted(set(wanted) - set(entries)):
            log.error("model %r is not in the model store %s", missing, store)
        entries = {n: e for n, e in entries.items() if n in wanted}
    return entries


def default_classifier(entries: dict[str, ModelEntry], configured: str | None = None) -> str | None:
    """The model `/classify` uses when none is named.

    `configured` if it names a classifier; else derl if present, else compact, else the
    first classifier by name; None when the store has no classifier.
    """
    classifiers = sorted(n for n, e in entries.items() if e.is_classifier)
    if configured:
        if configured in classifiers:
            return configured
        log.error("FER_DEFAULT_MODEL=%r is not a classifier in the store; ignoring it", configured)
    for name in DEFAULT_PREFERENCE:
        if name in classifiers:
            return name
    return classifiers[0] if classifiers else None
