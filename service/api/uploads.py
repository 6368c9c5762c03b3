"""The one upload reader: named files of a multipart/form-data body, or a raw image body.

The byte limit is enforced while the body streams in (and up front from Content-Length),
so a huge upload is refused with 413 without being read; a body that does not arrive
within FER_BODY_TIMEOUT seconds is 408. Multipart files are held in memory (never spooled
to a temporary file, whatever their size up to the limit), so no upload touches the disk.
`/classify` takes its `image` as a multipart file or as the body itself; `/transfer` takes
its `face` and `expression` as multipart files only.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from fastapi import Request
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.types import Message, Receive

from service.imaging import ImageLimits
from service.problems import ProblemError

#: Room for multipart boundaries and part headers on top of the images' own byte limit.
MULTIPART_SLACK = 64 * 1024

#: Raw request bodies taken as the image itself.
RAW_TYPES = ("image/", "application/octet-stream")


def limited_receive(receive: Receive, limit: int, timeout: float) -> Receive:
    """`receive` that fails with 413 once the body grows past `limit` bytes, and with 408
    when the whole body has not arrived `timeout` seconds after the first read."""
    seen = 0
    deadline: float | None = None

    async def wrapped() -> Message:
        nonlocal seen, deadline
        loop = asyncio.get_running_loop()
        if deadline is None:
            deadline = loop.time() + timeout
        try:
            async with asyncio.timeout_at(deadline):
                message = await receive()
        except TimeoutError:
            raise ProblemError(
                "request-timeout", f"the body did not arrive within {timeout:g} s"
            ) from None
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise ProblemError("payload-too-large", f"the body exceeds {limit} bytes")
        return message

    return wrapped


async def read_uploads(
    request: Request,
    limits: ImageLimits,
    names: Sequence[str],
    raw_body: bool = False,
    timeout: float = 30.0,
) -> dict[str, bytes]:
    """The uploaded files `names` of a multipart/form-data body, each within the byte limit.

    With `raw_body` (one name only), an `image/*` or `application/octet-stream` body is
    that file itself. 400 `missing-image`, 408 `request-timeout` (after `timeout`
    seconds), 413 `payload-too-large`, 415 `unsupported-media-type`.
    """
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    multipart = content_type == "multipart/form-data"
    wanted = " and ".join(f"'{n}'" for n in names)
    got = f"(got {content_type or 'no content type'})"
    if not multipart and not raw_body:
        raise ProblemError(
            "unsupported-media-type", f"send multipart/form-data with the files {wanted} {got}"
        )
    limit = len(names) * limits.max_bytes + (MULTIPART_SLACK if multipart else 0)
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > limit:
        raise ProblemError("payload-too-large", f"the body is {length} bytes; the limit is {limit}")
    limited = Request(request.scope, limited_receive(request.receive, limit, timeout))
    if multipart:
        return await _read_form(limited, names, limit)
    if content_type.startswith(RAW_TYPES):
        return {names[0]: b"".join([chunk async for chunk in limited.stream()])}
    if not content_type and length in (None, "0") and "transfer-encoding" not in request.headers:
        raise ProblemError(
            "missing-image", f"no image: send multipart/form-data with a field {wanted}"
        )
    raise ProblemError(
        "unsupported-media-type",
        f"send multipart/form-data with a field {wanted}, or the image as the body with an "
        f"image/* content type {got}",
    )


async def _read_form(request: Request, names: Sequence[str], limit: int) -> dict[str, bytes]:
    # A few spare parts, so that an extra file is ignored rather than refused.
    parser = MultiPartParser(
        request.headers, request.stream(), max_files=max(4, len(names) + 2), max_fields=16
    )
    # Starlette spools a file part over 1 MiB to a temporary file on disk; the whole body
    # is already bounded by `limit`, so keep every part in memory instead.
    parser.spool_max_size = limit + 1
    try:
        form = await parser.parse()
    except MultiPartException as exc:
        raise ProblemError("missing-image", f"malformed multipart body: {exc.message}") from exc
    try:
        files: dict[str, bytes] = {}
        for name in names:
            upload = form.get(name)
            if not isinstance(upload, UploadFile):
                fields = ", ".join(sorted(set(form.keys()))) or "none"
                what = "a text field, not a file" if upload is not None else "missing"
                raise ProblemError(
                    "missing-image", f"the multipart field '{name}' is {what} (fields: {fields})"
                )
            files[name] = await upload.read()
        return files
    finally:
        await form.close()
