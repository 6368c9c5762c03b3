"""The demo page (service/web/) at `/`, its files under `/web/`; none of it is in the
OpenAPI document, as it is no part of the API."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

#: The page's static files: HTML, JavaScript and CSS, no build step.
WEB = Path(__file__).resolve().parents[1] / "web"

router = APIRouter(include_in_schema=False)


@router.get("/")
async def index() -> FileResponse:
    """The demo page."""
    return FileResponse(WEB / "index.html", headers={"Cache-Control": "no-cache"})


def install_web(app: FastAPI) -> None:
    """Serve the demo page at `/` and its files at `/web/`."""
    app.include_router(router)
    app.mount("/web", StaticFiles(directory=WEB), name="web")
