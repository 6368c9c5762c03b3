"""Liveness and readiness probes."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from service.api.deps import ServicesDep
from service.schemas import Check, Health, Readiness

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health, summary="Liveness")
async def healthz() -> Health:
    """200 while the process serves HTTP; it checks nothing else."""
    return Health()


@router.get(
    "/readyz",
    response_model=Readiness,
    summary="Readiness",
    responses={503: {"model": Readiness, "description": "some check failed"}},
)
async def readyz(services: ServicesDep) -> JSONResponse:
    """200 when every served model is loaded and able to answer and the job queue (Redis,
    with FER_JOBS=celery) is reachable, else 503 (same body)."""
    checks: dict[str, Check] = {}
    if not services.models:
        checks["model-store"] = Check(
            ok=False, detail=f"no readable .mar in {services.settings.model_store}"
        )
    for entry in services.models:
        status = await services.backend.status(entry)
        checks[f"model:{entry.name}"] = Check(ok=status.ready, detail=status.detail)
    if services.jobs is not None:
        queue = await services.jobs.check()
        checks["jobs"] = Check(ok=queue.ok, detail=queue.detail)
    ok = all(c.ok for c in checks.values())
    body = Readiness(status="ready" if ok else "not-ready", checks=checks)
    return JSONResponse(body.model_dump(), status_code=200 if ok else 503)
