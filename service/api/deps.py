"""What the routes share: the running services of the app, as an `Annotated` dependency."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from service.catalog import ModelEntry
from service.errors import ProblemError
from service.faces import FaceDetector
from service.imaging import ImageLimits
from service.inference import BackendUnavailable, InferenceBackend
from service.jobs import JobQueue
from service.settings import Settings


@dataclass
class Services:
    """Everything the lifespan of the app started."""

    settings: Settings
    catalog: dict[str, ModelEntry]
    default_model: str | None
    detector: FaceDetector
    backend: InferenceBackend
    jobs: JobQueue | None = None

    @property
    def limits(self) -> ImageLimits:
        return ImageLimits(self.settings.max_upload_bytes, self.settings.max_pixels)

    def model(self, name: str) -> ModelEntry:
        """The model called `name`, or a 404 `unknown-model` problem."""
        entry = self.catalog.get(name)
        if entry is None:
            known = ", ".join(sorted(self.catalog)) or "none"
            raise ProblemError("unknown-model", f"no model '{name}'; known: {known}")
        return entry

    def classifier(self, name: str | None) -> ModelEntry:
        """The classifier called `name` (the default one when None)."""
        if name is None:
            if self.default_model is None:
                raise ProblemError(
                    "model-not-ready",
                    f"the model store {self.settings.model_store} has no classifier",
                    retry_after=self.settings.retry_after,
                )
            name = self.default_model
        entry = self.model(name)
        if not entry.is_classifier:
            known = ", ".join(sorted(n for n, e in self.catalog.items() if e.is_classifier))
            raise ProblemError(
                "not-a-classifier",
                f"model '{name}' is a {entry.kind} model; classifiers: {known or 'none'}",
            )
        return entry


def get_services(request: Request) -> Services:
    """The app's services (503 while the app is starting or stopping)."""
    services = getattr(request.app.state, "services", None)
    if not isinstance(services, Services):
        raise BackendUnavailable("the service is starting", retry_after=1)
    return services


ServicesDep = Annotated[Services, Depends(get_services)]
