"""The models of the model store."""

from __future__ import annotations

from fastapi import APIRouter

from service.api.deps import Services, ServicesDep
from service.catalog import ModelEntry
from service.errors import problem_responses
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
        default=entry.name == services.default_model,
    )


@router.get("/models", response_model=ModelList, summary="List the models")
async def list_models(services: ServicesDep) -> ModelList:
    """Every model of the model store with its input crop, classes and readiness."""
    infos = [await _info(services, e) for e in services.catalog.values()]
    return ModelList(default=services.default_model, models=infos)


@router.get(
    "/models/{name}",
    response_model=ModelInfo,
    summary="Describe one model",
    responses=problem_responses("unknown-model"),
)
async def get_model(name: str, services: ServicesDep) -> ModelInfo:
    """One model of the model store."""
    return await _info(services, services.model(name))
