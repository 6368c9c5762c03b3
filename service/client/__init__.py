"""A Python client of the fer-service REST API, sync (`Client`) and async (`AsyncClient`).

```python
from service.client import Client

with Client("http://127.0.0.1:8000") as fer:
    for face in fer.classify("photo.jpg").faces:
        print(face.expression, face.box)
    png = fer.transfer("me.jpg", "smile.jpg", timeout=60)  # queue the job, wait, fetch
```

Answers are the API's own pydantic models (`service.schemas`). An error answer
(`application/problem+json`) is raised as a `ServiceError` subclass carrying the
`Problem`; a job that fails raises `JobFailedError`, one that does not finish in time
`JobTimeoutError`. A `503` (or `429`) with `Retry-After` is retried after that many
seconds, `retries` times. `embedded()` is an `AsyncClient` on an in-process gateway: no
server, the same API (what the `fer-service classify` command uses by default).
"""

from __future__ import annotations

from service.client.calls import JOB_POLL_INTERVAL, ImageSource, JobCallback
from service.client.clients import DEFAULT_URL, AsyncClient, Client, embedded
from service.client.errors import (
    BadRequestError,
    JobFailedError,
    JobTimeoutError,
    NotFoundError,
    ServerError,
    ServiceError,
    UnavailableError,
    retry_after_seconds,
)

__all__ = [
    "DEFAULT_URL",
    "JOB_POLL_INTERVAL",
    "AsyncClient",
    "BadRequestError",
    "Client",
    "ImageSource",
    "JobCallback",
    "JobFailedError",
    "JobTimeoutError",
    "NotFoundError",
    "ServerError",
    "ServiceError",
    "UnavailableError",
    "embedded",
    "retry_after_seconds",
]
