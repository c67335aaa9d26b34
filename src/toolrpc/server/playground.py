"""`GET /`: the playground, one static page (package data) that talks to `/stream`.

No build step, no CDN, nothing fetched from elsewhere: the page is plain HTML, CSS and
JavaScript that works offline. It streams a chat through `/stream`, edits the tools (with three
examples to load), shows each tool call as a card where the user types or picks a result and
sends it back, and shows `finish_reason`, `iteration_count`, usage and the loop guard.
"""

from __future__ import annotations

from importlib import resources

from fastapi import FastAPI
from fastapi.responses import HTMLResponse


def playground_html() -> str:
    """The page's HTML, read from the package."""
    return resources.files("toolrpc.server").joinpath("static/playground.html").read_text("utf-8")


def add_playground(app: FastAPI) -> None:
    """Serve the playground at `GET /` on `app` (read once, when the app is built)."""
    page = playground_html()

    @app.get("/", include_in_schema=False)
    async def playground() -> HTMLResponse:
        return HTMLResponse(page, headers={"Cache-Control": "no-cache"})
