"""`GET /metrics`: the gateway's Prometheus metrics (service/metrics.py), and
`MetricsMiddleware`, which counts and times every request by route template (never the
raw path, so job ids make no new series), method, status and model
(`request.state.model`, which the routes that run a model set)."""

from __future__ import annotations

import logging
import time

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.types import ASGIApp, Message, Receive, Scope, Send

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


def route_of(scope: Scope) -> str:
    """The route template a request matched (`/jobs/{job_id}`), or `unmatched`."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else "unmatched"


class MetricsMiddleware:
    """Counts and times every HTTP request (see the module docstring)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the client sees if the app fails before answering

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route, method = route_of(scope), scope["method"]
            model = str(scope.get("state", {}).get("model", ""))
            self.metrics.requests.labels(route, method, str(status), model).inc()
            elapsed = time.perf_counter() - started
            self.metrics.latency.labels(route, method, model).observe(elapsed)
