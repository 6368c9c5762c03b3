"""`GET /metrics`: the gateway's Prometheus metrics (service/metrics.py)."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST

from service.api.deps import ServicesDep
from service.metrics import Metrics

log = logging.getLogger(__name__)

router = APIRouter(tags=["health"])


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={
        200: {
            "description": "Prometheus text format",
            "content": {CONTENT_TYPE_LATEST.split(";")[0]: {"schema": {"type": "string"}}},
        }
    },
)
async def metrics(request: Request, services: ServicesDep) -> Response:
    """Requests and latency by route and model, faces per image, pipeline step durations,
    the job queue's depth, job durations and outcomes, inference backend errors."""
    registry: Metrics = request.app.state.metrics
    if services.jobs is not None:
        try:
            registry.queue_depth.set(await services.jobs.depth())
        except Exception as exc:  # noqa: BLE001 - a scrape must not fail with the queue
            log.info("job queue depth unknown: %s", type(exc).__name__)
            registry.queue_depth.set(float("nan"))
    return Response(registry.exposition(), media_type=CONTENT_TYPE_LATEST)
