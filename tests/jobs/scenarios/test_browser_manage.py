"""In a real browser: rename a run from its page, delete it through the panel's second step (no script asks), and
try to delete the teacher it used, which is archived instead, with the message.

Debian's Chromium (``tests/jobs/browser.py``) talks to daphne serving kdweb on the test database and the test's
data folder, so the deletion's on-commit removal of the run folder happens in the server, as in production.
Screenshots land in ``test-artifacts/browser/manage-*.png``.
"""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from jobs.models import Run, Teacher
from tests.jobs.browser import chromium_session, in_thread, open_as, session_cookie
from tests.jobs.conftest import daphne, process_env
from tests.jobs.scenarios.test_browser_live import expect_clean
from tests.jobs.services.test_manage import a_run, run_folder

pytestmark = pytest.mark.django_db(transaction=True)


def test_an_owner_renames_and_deletes_a_run_and_its_teacher_is_archived(data_dir, owner, team):
    run = a_run(team)
    folder = run_folder(run)
    cookie = session_cookie(owner)
    with daphne(process_env(data_dir), data_dir / "daphne.log") as base, chromium_session(prefix="manage-") as s:
        page = open_as(s, base, cookie, f"/runs/{run.pk}/")
        panel = page.locator("details.manage")
        s.click(panel.locator("summary").first)
        panel.get_by_label(f"New name of {run.name}").fill("kept for the paper")
        s.click(panel.get_by_role("button", name="Rename"))
        expect(page.locator(".page-head h1")).to_contain_text("kept for the paper")

        s.click(page.locator("details.manage > summary"))
        confirm = page.locator("details.confirm")
        expect(confirm.get_by_role("button", name="Delete run")).to_be_hidden()  # one click is not enough
        s.click(confirm.locator("summary"))
        s.shot("confirm", page.locator("details.manage"))
        s.click(confirm.get_by_role("button", name="Delete run kept for the paper"))
        expect(page.locator("body")).to_contain_text("Deleted run kept for the paper.")
        assert page.url == f"{base}/" and not folder.exists()
        assert not in_thread(Run.objects.filter(pk=run.pk).exists)  # the ORM stays out of the browser's event loop

        used = in_thread(a_run, team, "second")
        page.goto(f"{base}/teachers/")
        row = page.locator(f'[data-manage="teacher-{used.teacher_id}"]')
        s.click(row.locator("summary").first)
        s.click(row.locator("details.confirm summary"))
        expect(row).to_contain_text("1 run uses this teacher: it will be archived instead of deleted.")
        s.click(row.get_by_role("button", name="Archive instead"))
        expect(page.locator("body")).to_contain_text("tiny-teacher is used by 1 run: archived instead of deleted.")
        s.shot("archived")
        assert in_thread(Teacher.objects.get, pk=used.teacher_id).archived
        expect_clean(s)
