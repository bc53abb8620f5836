"""Debian's Chromium, driven by Playwright (sync API), for the browser tests. No browser is ever downloaded.

:func:`chromium_session` opens one page and watches it: console errors, uncaught exceptions, every
request's URL and every answer of 400 or more, so a test can assert that the pages ran without a JS error
and fetched nothing from outside the live server (no CDN). :class:`BrowserSession` also counts the clicks
a test makes and saves numbered full-page screenshots to ``test-artifacts/browser/``.

Playwright's sync API keeps an asyncio loop running in this thread, which makes Django refuse ORM calls
here (``SynchronousOnlyOperation``): tests set up their rows before opening a session and read the
database after closing it. The live server answers from its own threads, so it is not affected.
"""

from __future__ import annotations

import glob
import json
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from django.conf import settings
from django.db import connection
from django.test import Client
from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import Locator, Page, sync_playwright

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = REPO / "test-artifacts" / "browser"
LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1"}
VIEWPORT = {"width": 1280, "height": 900}
SCREENSHOT_TIMEOUT_MS = 20_000


def require_chromium() -> Path:
    """Debian's Chromium, or a failure (never a skip: in CI and locally `make test` installs it)."""
    if not (CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK)):
        where = "in CI (CI=true)" if os.environ.get("CI") == "true" else "on this machine"
        pytest.fail(
            f"{CHROMIUM} is missing {where}: the browser tests drive Debian's chromium and never download "
            "one; install it as root with `apt-get install -y chromium` (make test's browser target does)",
            pytrace=False,
        )
    return CHROMIUM


@dataclass
class PageWatch:
    """What a page did besides what the test looked at."""

    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    bad_responses: list[str] = field(default_factory=list)

    def attach(self, page: Page) -> None:
        page.on(
            "console",
            lambda m: (
                self.console_errors.append(f"{m.text} ({m.location}) on {m.page.url if m.page else '?'}")
                if m.type == "error"
                else None
            ),
        )
        page.on("pageerror", lambda e: self.page_errors.append(str(e)))
        page.on("request", lambda r: self.requests.append(r.url))
        page.on("response", lambda r: self.bad_responses.append(f"{r.status} {r.url}") if r.status >= 400 else None)

    def foreign_requests(self) -> list[str]:
        """Requests to anything but the live server's host (data: and blob: URLs stay in the page)."""
        out = []
        for url in self.requests:
            parts = urlsplit(url)
            if parts.scheme in ("data", "blob", "about"):
                continue
            if parts.hostname not in LOCAL_HOSTS:
                out.append(url)
        return out


@dataclass
class BrowserSession:
    page: Page
    watch: PageWatch
    shots: list[Path] = field(default_factory=list)
    prefix: str = ""  # of the screenshots' names, so the files of several tests can sit side by side
    first_shot: int = 1  # number of the first screenshot (a later session of a test goes on counting)
    clicks: int = 0
    extra_clicks: int = 0  # clicks a user in a hurry would not make (showing errors, trying the editor)

    def click(self, target: Locator, *, extra: bool = False) -> None:
        target.click()
        self.clicks += 1
        self.extra_clicks += extra

    @property
    def needed_clicks(self) -> int:
        return self.clicks - self.extra_clicks

    def shot(self, name: str, target: Locator | None = None) -> Path:
        """A full-page screenshot (or one of ``target`` only, quicker), ``<prefix>NN-name.png`` in the order
        taken."""
        return self.shot_as(f"{self.prefix}{self.first_shot + len(self.shots):02d}-{name}", target)

    def shot_as(self, name: str, target: Locator | None = None) -> Path:
        """A screenshot as :meth:`shot` takes it, named exactly ``name.png`` (a later run replaces it)."""
        path = ARTIFACTS / f"{name}.png"
        for attempt in (1, 2):
            try:
                if target is not None:
                    target.screenshot(path=path, timeout=SCREENSHOT_TIMEOUT_MS)
                else:
                    self.page.screenshot(path=path, full_page=True, timeout=SCREENSHOT_TIMEOUT_MS)
                break
            except PlaywrightError:
                if attempt == 2:
                    raise
                # a live page reloads itself when its run ends: a shot taken across that never completes
                self.page.wait_for_load_state("load")
        self.shots.append(path)
        return path


@contextmanager
def chromium_session(*, timeout_ms: int = 20_000, prefix: str = "", keep: bool = False) -> Iterator[BrowserSession]:
    """One Chromium page in a fresh browser and context.

    Its screenshots are named ``<prefix>NN-name.png``; earlier ones of the same prefix are removed first,
    unless ``keep`` (a test's later session), which numbers on after them.
    """
    executable = require_chromium()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    earlier = sorted(ARTIFACTS.glob(f"{glob.escape(prefix)}[0-9][0-9]-*.png"))
    if not keep:
        for old in earlier:
            old.unlink()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(executable), args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport=VIEWPORT, locale="en-US")
            context.set_default_timeout(timeout_ms)
            page = context.new_page()
            watch = PageWatch()
            watch.attach(page)
            yield BrowserSession(page, watch, prefix=prefix, first_shot=len(earlier) + 1 if keep else 1)
        finally:
            browser.close()


# --- the run page, as its scripts publish it -----------------------------------------------------------------


def in_thread(fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` in a thread of its own (with its own database connection, closed after)."""

    def call():
        try:
            return fn(*args, **kwargs)
        finally:
            connection.close()

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(call).result()


def session_cookie(user) -> str:
    """A logged-in session of ``user`` (stored in the test database, which daphne reads)."""
    client = Client()
    client.force_login(user)
    return client.cookies[settings.SESSION_COOKIE_NAME].value


def open_as(s: BrowserSession, base: str, cookie: str, path: str) -> Page:
    s.page.context.add_cookies([{"name": settings.SESSION_COOKIE_NAME, "value": cookie, "url": base}])
    s.page.goto(f"{base}{path}")
    return s.page


def counts(page: Page) -> dict[str, int]:
    """Points per series the run page holds (charts.js, once it has drawn the charts)."""
    charts = page.locator("#charts[data-counts]")
    charts.wait_for(state="attached")
    return json.loads(charts.get_attribute("data-counts") or "{}")


def total_points_above(page: Page, n: int, timeout_ms: float) -> int:
    page.wait_for_function(
        "n => (JSON.parse(document.getElementById('charts').dataset.counts || '{}')['loss/total'] || 0) > n",
        arg=n,
        timeout=timeout_ms,
    )
    return counts(page)["loss/total"]


def chart_steps(page: Page, group: str = "loss/total") -> list[int]:
    """The steps of the first trace of a chart, as Plotly draws them."""
    page.locator("#charts[data-counts]").wait_for(state="attached")
    return page.evaluate(
        "group => Array.from(document.querySelector(`#charts .chart[data-group='${group}']`).data[0].x)", group
    )
