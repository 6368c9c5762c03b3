"""The model store as the gateway sees it: what each `.mar` is, read from its metadata.

Both backends serve the same archives; the gateway learns names, versions, classes and the
input crop of each model from the archives themselves (`service.archive.read_manifest`),
never from the backend. `ModelStore` is the one lookup the routes and the jobs share.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from service.archive import ArchiveMetadata, InputSpec, read_manifest
from service.problems import ProblemError
from service.settings import Settings

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


class ModelStore:
    """The archives being served, by name, and the default classifier: one object, held by
    the app's services and by the job runtime alike."""

    def __init__(
        self,
        entries: dict[str, ModelEntry],
        default: str | None,
        location: Path,
        retry_after: int = 5,
    ) -> None:
        self.entries = entries
        self.default = default
        self.location = location
        self.retry_after = retry_after

    @classmethod
    def from_settings(cls, settings: Settings) -> ModelStore:
        """The archives of FER_MODEL_STORE (only FER_MODELS, if set) and the default
        classifier (FER_DEFAULT_MODEL if it names one)."""
        entries = scan(settings.model_store, settings.models)
        default = default_classifier(entries, settings.default_model)
        return cls(entries, default, settings.model_store, settings.retry_after)

    def __iter__(self) -> Iterator[ModelEntry]:
        return iter(self.entries.values())

    def __len__(self) -> int:
        return len(self.entries)

    def get(self, name: str) -> ModelEntry:
        """The model called `name`, or a 404 `unknown-model` problem."""
        entry = self.entries.get(name)
        if entry is None:
            known = ", ".join(sorted(self.entries)) or "none"
            raise ProblemError("unknown-model", f"no model '{name}'; known: {known}")
        return entry

    def classifier(self, name: str | None) -> ModelEntry:
        """The classifier called `name` (the default one when None); 404 `unknown-model`,
        422 `not-a-classifier`, or 503 `model-not-ready` when the store has none."""
        if name is None:
            if self.default is None:
                raise ProblemError(
                    "model-not-ready",
                    "the model store has no classifier",
                    retry_after=self.retry_after,
                )
            name = self.default
        entry = self.get(name)
        if not entry.is_classifier:
            known = ", ".join(sorted(n for n, e in self.entries.items() if e.is_classifier))
            raise ProblemError(
                "not-a-classifier",
                f"model '{name}' is a {entry.kind} model; classifiers: {known or 'none'}",
            )
        return entry

    def require(self, name: str, kind: str) -> ModelEntry:
        """The archive `name`, which a job of `kind` needs; 503 `model-not-ready` when the
        store lacks it or it is another kind of model."""
        entry = self.entries.get(name)
        if entry is None:
            raise ProblemError(
                "model-not-ready",
                f"the model store has no '{name}' archive, which {kind} jobs need",
                retry_after=self.retry_after,
            )
        if entry.kind != kind:
            raise ProblemError(
                "model-not-ready",
                f"the archive '{name}' is a {entry.kind} model, not a {kind} model",
                retry_after=self.retry_after,
            )
        return entry
