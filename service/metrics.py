"""The gateway's Prometheus metrics (`GET /metrics`), one registry per app.

`Metrics` holds every instrument; `MetricsMiddleware` counts and times each request by
route template (never the raw path, so job ids do not make new series), method, status
and model (`request.state.model`, which the routes that run a model set). The routes and
the job queue add faces per image, decode and detect times, job durations and outcomes,
backend errors; the queue depth is read when /metrics is scraped.
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: Seconds: from a cached probe to a slow job.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
STEP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
FACE_BUCKETS = (0, 1, 2, 3, 5, 10, 20, 50)


class Metrics:
    """Every instrument of one app, in its own registry (apps in one process stay apart)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "fer_requests",
            "HTTP requests answered",
            ["route", "method", "status", "model"],
            registry=r,
        )
        self.latency = Histogram(
            "fer_request_duration_seconds",
            "HTTP request latency, from the first byte received to the last byte sent",
            ["route", "method", "model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.faces = Histogram(
            "fer_faces_per_image",
            "faces found in a /classify image (after max_faces)",
            ["model"],
            buckets=FACE_BUCKETS,
            registry=r,
        )
        self.steps = Histogram(
            "fer_step_duration_seconds",
            "duration of one step of the face pipeline (decode, detect, align, classify)",
            ["step"],
            buckets=STEP_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge(
            "fer_job_queue_depth", "jobs waiting to be run (read at scrape time)", registry=r
        )
        self.jobs = Histogram(
            "fer_job_duration_seconds",
            "seconds from a job's creation to its end, by kind and outcome",
            ["kind", "outcome"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.backend_errors = Counter(
            "fer_backend_errors",
            "inference backend failures, by problem type",
            ["type"],
            registry=r,
        )

    def observe_steps(self, timings: dict[str, float]) -> None:
        """Record the durations of the pipeline steps of one request (seconds by step)."""
        for step, seconds in timings.items():
            if step != "total":
                self.steps.labels(step).observe(seconds)

    def exposition(self) -> bytes:
        """The registry in Prometheus' text format."""
        return generate_latest(self.registry)


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
