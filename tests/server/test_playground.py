"""The playground (`GET /`) in a real headless Chromium, against a server on a loopback port
whose FakeEngine streams a scripted conversation slowly enough to watch it arrive.

Chromium is Debian's `chromium` (installed by .ci/run); playwright drives it through
`executable_path`, so no browser is downloaded. Without a Chromium the test fails, loudly: a
browser test that skips would pass CI without ever having run. The run saves a screenshot of
the conversation to docs/playground.png (shown in the README).
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Page, expect, sync_playwright

from tests.client.servers import serving_on_loopback, tool_call
from tests.server.apps import make_app
from toolrpc.config import Settings
from toolrpc.engines.fake import FakeEngine
from toolrpc.server import create_app

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOT = ROOT / "docs" / "playground.png"
WAIT_MS = 15_000
GREETING = "Hello! I am toolrpc's scripted test model, streaming this answer piece by piece."
ANSWER = "It is sunny and 18 degrees in Paris today."


RECORD_ANSWER_TEXTS = """() => {
  window.answerTexts = [];
  new MutationObserver(() => {
    const text = document.querySelector(".msg.assistant .text");
    if (text) window.answerTexts.push(text.textContent);
  }).observe(document.getElementById("log"), {subtree: true, childList: true, characterData: true});
}"""
"""Records every text the first answer shows, so the test sees it arrive piece by piece."""


def chromium_path() -> str:
    """The system Chromium; fails the test (never skips) when there is none."""
    for candidate in (os.environ.get("TOOLRPC_CHROMIUM"), "chromium", "chromium-browser"):
        found = candidate and shutil.which(candidate)
        if found:
            return found
    pytest.fail("no Chromium found: install Debian's `chromium` package (.ci/run does)")


@pytest.fixture
def page() -> Iterator[Page]:
    """A page of a headless Chromium (no sandbox: CI runs as root)."""
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium_path(), args=["--no-sandbox", "--disable-gpu"]
        )
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 860})
            page.set_default_timeout(WAIT_MS)
            yield page
        finally:
            browser.close()


def test_the_playground_is_served_at_the_root_as_one_offline_page() -> None:
    app, _engine = make_app()
    with serving_on_loopback(app) as url:
        response = httpx.get(url + "/", timeout=WAIT_MS / 1000)

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert re.search(r"(src|href)=\"(https?:)?//", response.text) is None  # nothing from elsewhere


def test_a_conversation_with_a_tool_in_the_playground(page: Page) -> None:
    paris = tool_call("get_weather", city="Paris")
    script = [GREETING, paris, ANSWER, paris, paris, "Still sunny."]
    engine = FakeEngine(script, piece_delay_s=0.03)
    app = create_app(Settings(tool_router="off"), engine=engine)
    with serving_on_loopback(app) as url:
        page.goto(url + "/")
        expect(page.locator("#model")).to_contain_text("fake")

        page.evaluate(RECORD_ANSWER_TEXTS)
        page.fill("#message", "Hi")
        page.click("#send")
        expect(page.locator(".msg.assistant .text").first).to_have_text(GREETING)
        seen: list[str] = page.evaluate("window.answerTexts")
        assert any(0 < len(text) < len(GREETING) and GREETING.startswith(text) for text in seen)
        expect(page.locator(".msg.assistant .meta").first).to_contain_text("finish_reason: stop")

        page.click("[data-example=weather]")
        expect(page.locator("#tools-status")).to_have_text("1 tool(s)")
        page.fill("#message", "What's the weather in Paris?")
        page.click("#send")
        card = page.locator(".card")
        expect(card.locator(".name")).to_contain_text("get_weather")
        expect(card.locator(".args")).to_contain_text('"city": "Paris"')
        card.locator(".result").fill('{"temp_c": 18, "sky": "sunny"}')
        card.locator(".send-results").click()

        final = page.locator(".msg.assistant .text").last
        expect(final).to_have_text(ANSWER)
        expect(page.locator(".msg.assistant .meta").last).to_contain_text("iteration_count: 1")
        SCREENSHOT.parent.mkdir(exist_ok=True)
        page.screenshot(path=str(SCREENSHOT))
        assert "sunny" in engine.requests[-1].prompt  # the typed result reached the model

        page.fill("#message", "And now?")
        page.click("#send")
        expect(page.locator(".card")).to_have_count(2)
        page.locator(".card").last.locator(".send-results").click()  # the example's result
        expect(page.locator(".msg.assistant .text").last).to_have_text("Still sunny.")
        expect(page.locator(".msg.assistant .meta").last).to_contain_text("loop_guard")
        expect(page.locator(".msg.assistant .meta .badge").last).to_have_text("loop guard")
