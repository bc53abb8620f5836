"""In a real browser: share a finished run from its page, open the public link without login, revoke it.

Debian's Chromium (``tests/jobs/browser.py``) talks to daphne serving kdweb on the test database; the run is
built with the ORM (a finished run needs no worker). The visitor is a fresh browser context of the same
browser: no cookie, no session. Screenshots land in ``test-artifacts/browser/share-*.png``.
"""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from tests.jobs.browser import VIEWPORT, BrowserSession, chromium_session, counts, open_as, session_cookie
from tests.jobs.conftest import daphne, process_env
from tests.jobs.pages.test_public import finished_run
from tests.jobs.scenarios.test_browser_live import expect_clean

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_public_link_shows_the_run_without_login_until_it_is_revoked(data_dir, owner, team):
    run = finished_run(team)
    cookie = session_cookie(owner)
    with daphne(process_env(data_dir), data_dir / "daphne.log") as base, chromium_session(prefix="share-") as s:
        # the owner creates a link from the run page's "Share" panel (htmx swaps the panel in place)
        page = open_as(s, base, cookie, f"/runs/{run.pk}/")
        panel = page.locator("#share-links")
        expect(panel).to_contain_text("No active public links.")
        s.click(panel.get_by_role("button", name="Create public link"))
        url_field = page.locator("#share-links input.copy-url")
        expect(url_field).to_have_count(1)
        public_url = url_field.input_value()
        assert re.fullmatch(rf"{re.escape(base)}/p/[A-Za-z0-9_-]{{43,}}/", public_url), public_url
        s.shot("panel", panel)

        # a visitor without login: the results and the chart, and nothing of the team
        visitor = s.page.context.browser.new_context(viewport=VIEWPORT, locale="en-US")
        public = visitor.new_page()
        s.watch.attach(public)
        assert public.goto(public_url).status == 200
        expect(public.locator(".page-head h1")).to_contain_text(run.name)
        expect(public.locator("table.metrics")).to_be_visible()
        expect(public.locator("#charts .chart.js-plotly-plot").first).to_be_visible()
        assert counts(public)["loss/total"] == 3
        body = public.locator("body").inner_text()
        assert "alpha" not in body and "olivia" not in body
        expect(public.locator("nav")).to_have_count(0)
        BrowserSession(public, s.watch, prefix="share-", first_shot=len(s.shots) + 1).shot("public")
        expect_clean(s)

        # the owner revokes it: the visitor's reload is refused
        page.bring_to_front()
        s.click(panel.get_by_role("button", name="Revoke"))
        expect(page.locator("#share-links")).to_contain_text("No active public links.")
        assert public.reload().status == 404
        assert s.watch.bad_responses == [f"404 {public_url}"]
        visitor.close()
