"""The models of the model store."""

from __future__ import annotations

from fastapi import APIRouter

from service.api.deps import Services, ServicesDep
from service.api.errors import problem_responses
from service.catalog import ModelEntry
from service.schemas import ModelInfo, ModelList

router = APIRouter(tags=["models"])


async def _info(services: Services, entry: ModelEntry) -> ModelInfo:
    status = await services.backend.status(entry)
    return ModelInfo(
        name=entry.name,
        version=entry.version,
        kind=entry.metadata.kind,
        classes=entry.classes,
        input=entry.input,
        ready=status.ready,
        default=entry.name == services.models.default,
    )


@router.get("/models", response_model=ModelList, summary="List the models")
async def list_models(services: ServicesDep) -> ModelList:
    """Every model of the model store with its input crop, classes and readiness."""
    infos = [await _info(services, e) for e in services.models]
    return ModelList(default=services.models.default, models=infos)


@router.get(
    "/models/{name}",
    response_model=ModelInfo,
    summary="Describe one model",
    responses=problem_responses("unknown-model"),
)
async def get_model(name: str, services: ServicesDep) -> ModelInfo:
    """One model of the model store."""
    return await _info(services, services.models.get(name))
