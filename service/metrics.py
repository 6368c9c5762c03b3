"""The gateway's Prometheus metrics (`GET /metrics`), one registry per app.

`Metrics` holds every instrument (framework-free: the job queue records into it too);
`service.api.metrics.MetricsMiddleware` counts and times each request by route template,
method, status and model. The routes and the job queue add faces per image, decode and
detect times, job durations and outcomes, backend errors; the queue depth is read when
/metrics is scraped.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

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
            "duration of one step of the face pipeline (decode, detect, align, frontalize, "
            "classify)",
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
