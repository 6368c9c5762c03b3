"""Liveness and readiness probes.

Readiness is reported per capability (`classify`, `transfer`, `frontalize`, `video`,
`jobs`): the
gateway is ready (200) while `/classify` can answer, and names the capabilities that
cannot (`degraded`), so that an orchestrator keeps a gateway in service whose job queue
or transfer model is down but whose classification works.
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from service.api.deps import Services, ServicesDep
from service.jobs.registry import KINDS
from service.jobs.video import VIDEO
from service.schemas import Check, Health, Readiness, ReadyState

router = APIRouter(tags=["health"])

#: The capabilities that run as queued jobs, each named after its job kind.
JOB_CAPABILITIES = ("transfer", "frontalize")


@router.get("/healthz", response_model=Health, summary="Liveness")
async def healthz() -> Health:
    """200 while the process serves HTTP; it checks nothing else."""
    return Health()


async def _model_checks(services: Services) -> dict[str, Check]:
    checks: dict[str, Check] = {}
    for entry in services.models:
        status = await services.backend.status(entry)
        checks[f"model:{entry.name}"] = Check(ok=status.ready, detail=status.detail)
    return checks


def _job_capability(name: str, checks: dict[str, Check], jobs: Check) -> Check:
    kind = KINDS.get(name)
    if kind is None:
        return Check(ok=False, detail=f"this version has no {name} jobs")
    model = checks.get(f"model:{kind.model}")
    if model is None:
        return Check(ok=False, detail=f"the model store has no '{kind.model}' archive")
    if not model.ok:
        return Check(ok=False, detail=f"model '{kind.model}': {model.detail}")
    if not jobs.ok:
        return Check(ok=False, detail=f"the job queue: {jobs.detail}")
    return Check(ok=True, detail=f"model '{kind.model}' and the job queue answer")


def _video_capability(classify: Check, checks: dict[str, Check], jobs: Check) -> Check:
    """Video jobs need the default classifier and the queue; the sequence model is optional
    (without it a track's label is the mean of its frames')."""
    if not classify.ok:
        return Check(ok=False, detail=f"the frame classifier: {classify.detail}")
    if not jobs.ok:
        return Check(ok=False, detail=f"the job queue: {jobs.detail}")
    sequence = checks.get(f"model:{VIDEO.model}")
    if sequence is None:
        return Check(ok=True, detail="no sequence model: tracks get their frames' mean label")
    if not sequence.ok:
        return Check(ok=False, detail=f"model '{VIDEO.model}': {sequence.detail}")
    return Check(ok=True, detail=f"model '{VIDEO.model}' and the job queue answer")


@router.get(
    "/readyz",
    response_model=Readiness,
    summary="Readiness",
    responses={503: {"model": Readiness, "description": "/classify cannot answer"}},
)
async def readyz(services: ServicesDep) -> JSONResponse:
    """200 while `/classify` can answer (its default model is loaded and answers), with
    `status` `ready` when every capability works and `degraded` (naming the others in
    `degraded`) when some do not; 503 (same body) when classification cannot answer.
    `checks` has every model and the job queue (Redis, with FER_JOBS=celery)."""
    checks = await _model_checks(services)
    if services.jobs is not None:
        queue = await services.jobs.check()
        checks["jobs"] = Check(ok=queue.ok, detail=queue.detail)
    jobs = checks.get("jobs", Check(ok=False, detail="no job queue"))
    default = services.models.default
    if default is None:
        classify = Check(ok=False, detail="the model store has no classifier")
    else:
        model = checks[f"model:{default}"]
        classify = Check(ok=model.ok, detail=f"default model '{default}': {model.detail}")
    capabilities = {"classify": classify, "jobs": jobs}
    for name in JOB_CAPABILITIES:
        capabilities[name] = _job_capability(name, checks, jobs)
    capabilities["video"] = _video_capability(classify, checks, jobs)
    degraded = sorted(name for name, check in capabilities.items() if not check.ok)
    status: ReadyState = "not-ready" if not classify.ok else "degraded" if degraded else "ready"
    body = Readiness(status=status, capabilities=capabilities, degraded=degraded, checks=checks)
    return JSONResponse(body.model_dump(), status_code=200 if classify.ok else 503)
