"""Headless Chromium for the browser tests and the README's screenshots.

Playwright for Python drives the system's Chromium (Debian's `chromium` package), found on PATH
and passed as `executable_path`: no browser is ever downloaded (`playwright install` is never
run). Without one, the browser tests skip with the reason, except under `CI=true`, where a missing
browser is a failure: CI installs it (.ci/run).

`open_page(url)` yields a page with absolute timeouts on every wait; `show_demo(server)` sends the
calls the README's screenshots show (tests/browser/screenshots.py).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Final

import pytest
from playwright.sync_api import Page, ViewportSize, sync_playwright

from tests.helpers.serverkit import API_KEY, LiveServer, http_json

__all__ = ["PAGE_TIMEOUT_MS", "chromium_path", "log_in", "open_page", "require_chromium", "send"]

CHROMIUM_NAMES: Final = ("chromium", "chromium-browser")
PAGE_TIMEOUT_MS: Final = 15_000  # every Playwright wait, click and navigation
VIEWPORT: Final = ViewportSize(width=1500, height=1000)


def chromium_path() -> str | None:
    """The system Chromium on PATH, or None."""
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found is not None:
            return found
    return None


def require_chromium() -> str:
    """The system Chromium; skip the test without one (fail instead under `CI=true`)."""
    found = chromium_path()
    if found is not None:
        return found
    reason = "no Chromium on PATH (apt-get install chromium): the browser tests need one"
    if os.environ.get("CI") == "true":
        pytest.fail(reason + "; CI must install it (.ci/run does)")
    pytest.skip(reason)


@contextmanager
def open_page(
    url: str, *, executable: str | None = None, viewport: ViewportSize | None = None
) -> Iterator[Page]:
    """A fresh headless browser (its own session storage) showing `url`."""
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=executable or require_chromium())
        try:
            page = browser.new_page(viewport=viewport or VIEWPORT)
            page.set_default_timeout(PAGE_TIMEOUT_MS)
            page.set_default_navigation_timeout(PAGE_TIMEOUT_MS)
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(url)
            yield page
            assert not errors, f"the page raised: {errors}"
        finally:
            browser.close()


def log_in(page: Page, key: str = API_KEY) -> None:
    """Answer the page's API key prompt."""
    page.locator("#key").fill(key)
    page.locator("#login button[type=submit]").click()


def send(server: LiveServer, method: str, path: str, body: Any = None) -> dict[str, Any]:
    """One call to the server's API with the send key; the answer must be a 2xx."""
    status, answer = http_json(method, server.api_base + path, body, key=API_KEY)
    assert 200 <= status < 300, (status, answer)
    return dict(answer)
