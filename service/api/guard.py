"""Who may call the gateway, and how much: API keys, per-caller rate and concurrency limits.

`Guard` is an ASGI middleware in front of every route. It names the caller of each
request (`Caller`: the API key's id, or, without keys, the client's address) in
`request.state.caller`, which scopes Idempotency-Keys and, with keys, the jobs a caller
sees. With `FER_API_KEYS` set, every path but `FER_OPEN_PATHS` needs a key (401 without
one, 403 with an unknown one). `FER_RATE_LIMIT` (a token bucket per caller) and
`FER_CONCURRENCY_LIMIT` (requests in progress per caller) answer 429 with Retry-After.
Open paths (the probes, /metrics) are neither authenticated nor limited.
"""

from __future__ import annotations

import copy
import hashlib
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from fastapi import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from service.api.errors import problem_response, problem_responses
from service.problems import ProblemSlug
from service.settings import Settings

#: Buckets kept before idle (full) ones are dropped, so that many addresses cannot grow
#: the table without bound.
MAX_BUCKETS = 4096


@dataclass(frozen=True)
class Caller:
    """Who sent a request: `id` is `key:<digest prefix>` or `client:<address>`."""

    id: str
    #: Whether `id` names an API key (jobs are then visible to that key only).
    keyed: bool


def key_id(key: str) -> str:
    """The id of an API key: a prefix of its SHA-256, safe to log and to store."""
    return hashlib.sha256(key.encode()).hexdigest()[:16]


async def get_caller(request: Request) -> Caller:
    """The caller `Guard` named for this request."""
    caller = getattr(request.state, "caller", None)
    if not isinstance(caller, Caller):  # an app built without the Guard: the client address
        host = request.client.host if request.client else "unknown"
        return Caller(f"client:{host}", keyed=False)
    return caller


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None


def presented_key(scope: Scope) -> str | None:
    """The API key of a request: `Authorization: Bearer <key>` or `X-API-Key: <key>`."""
    authorization = _header(scope, b"authorization")
    if authorization:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    key = _header(scope, b"x-api-key")
    return key.strip() if key and key.strip() else None


class _Bucket:
    """A token bucket: `rate` tokens per second, at most `burst` held."""

    __slots__ = ("tokens", "stamp")

    def __init__(self, burst: float, now: float) -> None:
        self.tokens = burst
        self.stamp = now


class Guard:
    """The ASGI middleware described in the module docstring."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.keys = {key_id(k.get_secret_value()) for k in settings.api_keys}
        self.open_paths = frozenset(settings.open_paths)
        self.rate = settings.rate_limit
        self.burst = float(settings.rate_burst)
        self.concurrency = settings.concurrency_limit
        self.retry_after = settings.retry_after
        self._buckets: dict[str, _Bucket] = {}
        self._in_flight: dict[str, int] = {}

    def _identify(self, scope: Scope) -> tuple[Caller, ProblemSlug | None]:
        if not self.keys:
            client = scope.get("client")
            return Caller(f"client:{client[0] if client else 'unknown'}", keyed=False), None
        key = presented_key(scope)
        if key is None:
            return Caller("anonymous", keyed=True), "unauthorized"
        digest = key_id(key)
        if digest not in self.keys:
            return Caller("anonymous", keyed=True), "forbidden"
        return Caller(f"key:{digest}", keyed=True), None

    def _wait_for_token(self, caller: str) -> float:
        """0 when `caller` may proceed now (a token is taken), else seconds to wait."""
        assert self.rate is not None
        now = time.monotonic()
        bucket = self._buckets.get(caller)
        if bucket is None:
            if len(self._buckets) >= MAX_BUCKETS:
                self._drop_full_buckets(now)
            bucket = self._buckets[caller] = _Bucket(self.burst, now)
        bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.stamp) * self.rate)
        bucket.stamp = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0.0
        return (1.0 - bucket.tokens) / self.rate

    def _drop_full_buckets(self, now: float) -> None:
        assert self.rate is not None
        full = [
            c
            for c, b in self._buckets.items()
            if b.tokens + (now - b.stamp) * self.rate >= self.burst
        ]
        for caller in full:
            del self._buckets[caller]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        caller, refused = self._identify(scope)
        scope.setdefault("state", {})["caller"] = caller
        if scope["path"] in self.open_paths:
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        if refused == "unauthorized":
            detail = "send an API key as `Authorization: Bearer <key>` or `X-API-Key: <key>`"
            response = problem_response(refused, detail, instance=path)
            response.headers["WWW-Authenticate"] = 'Bearer realm="fer-service"'
            await response(scope, receive, send)
            return
        if refused is not None:
            await problem_response(refused, "this API key is not known", instance=path)(
                scope, receive, send
            )
            return
        if self.rate is not None:
            wait = self._wait_for_token(caller.id)
            if wait > 0:
                retry = max(1, math.ceil(wait))
                detail = f"more than {self.rate:g} requests per second; retry in {retry} s"
                response = problem_response(
                    "rate-limited", detail, instance=path, retry_after=retry
                )
                await response(scope, receive, send)
                return
        if self.concurrency is None:
            await self.app(scope, receive, send)
            return
        running = self._in_flight.get(caller.id, 0)
        if running >= self.concurrency:
            detail = f"{running} requests of this caller are in progress (the limit)"
            response = problem_response("rate-limited", detail, instance=path, retry_after=1)
            await response(scope, receive, send)
            return
        self._in_flight[caller.id] = running + 1
        try:
            await self.app(scope, receive, send)
        finally:
            left = self._in_flight[caller.id] - 1
            if left:
                self._in_flight[caller.id] = left
            else:
                del self._in_flight[caller.id]


def document_access(spec: dict[str, Any], open_paths: Iterable[str]) -> dict[str, Any]:
    """Describe the API keys in an OpenAPI document: the two ways to send one, and on
    every operation outside `open_paths` the 401, 403 and 429 answers of `Guard`. A key
    is optional in the document (`{}` among the requirements): without FER_API_KEYS the
    gateway needs none."""
    spec.setdefault("components", {})["securitySchemes"] = {
        "bearer": {
            "type": "http",
            "scheme": "bearer",
            "description": "an API key of FER_API_KEYS, as `Authorization: Bearer <key>`",
        },
        "apiKey": {
            "type": "apiKey",
            "in": "header",
            "name": "X-API-Key",
            "description": "an API key of FER_API_KEYS, as `X-API-Key: <key>`",
        },
    }
    refused = {
        str(status): {"description": entry["description"], "content": entry["content"]}
        for status, entry in problem_responses("unauthorized", "forbidden", "rate-limited").items()
    }
    skip = set(open_paths)
    for path, operations in spec.get("paths", {}).items():
        if path in skip:
            continue
        for operation in operations.values():
            operation["security"] = [{"bearer": []}, {"apiKey": []}, {}]
            responses = operation.setdefault("responses", {})
            for status, entry in refused.items():
                responses.setdefault(status, copy.deepcopy(entry))
    return spec
