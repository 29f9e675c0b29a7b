"""The web page at ``/``: plain HTML and JavaScript, no build step."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from serving.deps import ServiceDep

WEB = Path(__file__).resolve().parent.parent / "web"
router = APIRouter(include_in_schema=False)


@router.get("/", response_class=HTMLResponse)
def index() -> HTMLResponse:
    return HTMLResponse((WEB / "index.html").read_text(), headers={"Cache-Control": "no-cache"})


@router.get("/page-config.json")
def page_config(service: ServiceDep) -> dict:
    """What the page needs before it has a key: whether keys are required."""
    return {"auth": service.settings.auth}


def static_files() -> StaticFiles:
    return StaticFiles(directory=WEB)
