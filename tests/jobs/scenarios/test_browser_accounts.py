"""In a real browser: an owner invites a new address, the mail lands in the file backend, and the invitee, in a
fresh browser context (no cookie), opens its link, makes an account and lands in the team with the invited role.

daphne serves kdweb on the test database with ``KDWEB_EMAIL_BACKEND=file``; the test reads the mail from that
folder as a mailbox would. Screenshots land in ``test-artifacts/browser/accounts-*.png``.
"""

from __future__ import annotations

import re

import pytest
from django.contrib.auth import get_user_model
from playwright.sync_api import expect

from tests.jobs.browser import VIEWPORT, BrowserSession, chromium_session, open_as, session_cookie
from tests.jobs.conftest import daphne, mails, process_env
from tests.jobs.pages.test_public import finished_run
from tests.jobs.scenarios.test_browser_live import expect_clean

pytestmark = pytest.mark.django_db(transaction=True)

PASSWORD = "tall-orange-kettle-41"
PHONE = {"width": 390, "height": 844}


def test_an_invited_address_signs_up_from_the_mail_and_sees_the_teams_runs(data_dir, owner, team):
    run = finished_run(team)
    mail_dir = data_dir / "mail"
    env = process_env(data_dir, KDWEB_EMAIL_BACKEND="file", KDWEB_MAIL_DIR=str(mail_dir))
    cookie = session_cookie(owner)
    with daphne(env, data_dir / "daphne.log") as base, chromium_session(prefix="accounts-") as s:
        # the owner invites an address no account has, as a viewer
        page = open_as(s, base, cookie, f"/teams/{team.pk}/")
        page.get_by_label("Username or e-mail").fill("nora@example.org")
        page.get_by_label("Role", exact=True).select_option("viewer")
        s.click(page.get_by_role("button", name="Invite"))
        expect(page.locator(".flash.success")).to_contain_text("Invitation mailed to nora@example.org")
        [mail] = mails(mail_dir)
        assert "To: nora@example.org" in mail and "as viewer" in mail
        link = re.search(rf"{re.escape(base)}/invites/[A-Za-z0-9_-]{{43,}}/", mail).group(0)

        # the invitee: another browser context, nobody logged in
        invitee = s.page.context.browser.new_context(viewport=VIEWPORT, locale="en-US")
        join = invitee.new_page()
        s.watch.attach(join)
        them = BrowserSession(join, s.watch, prefix="accounts-", first_shot=len(s.shots) + 1)
        assert join.goto(link).status == 200
        expect(join.locator("h1")).to_have_text("Join alpha")
        expect(join.locator(".lede")).to_contain_text("olivia invites you to the team alpha as viewer")
        join.get_by_label("Username").fill("nora")
        join.get_by_label("Password", exact=True).fill(PASSWORD)
        join.get_by_label("Password confirmation").fill(PASSWORD)
        them.shot("signup")
        # the sign-up page fits a phone without scrolling sideways
        join.set_viewport_size(PHONE)
        assert join.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
        them.shot("signup-phone")
        join.set_viewport_size(VIEWPORT)
        them.click(join.get_by_role("button", name="Sign up and join alpha"))

        expect(join).to_have_url(f"{base}/teams/{team.pk}/")
        expect(join.locator(".flash.success")).to_have_text("Welcome, nora: you joined alpha as viewer.")
        expect(join.locator(".page-head h1 .tag")).to_have_text("you: viewer")
        them.click(join.locator("nav").get_by_role("link", name="Runs"))
        expect(join.locator("main")).to_contain_text(run.name)
        them.shot("runs")
        expect_clean(s)
        # the link is spent: opening it again says so
        assert join.goto(link).status == 410
        expect(join.locator("[data-refused]")).to_contain_text("has been used already")
        assert s.watch.bad_responses == [f"410 {link}"]
        invitee.close()


def test_the_admin_works_under_the_content_security_policy(data_dir, owner, member, team):
    """Staff manage users in Django's admin: its pages and scripts run under kdweb's policy (no inline code)."""
    admin = get_user_model().objects.create_user("ada", is_staff=True, is_superuser=True)
    cookie = session_cookie(admin)
    data_dir.mkdir(parents=True)
    with daphne(process_env(data_dir), data_dir / "daphne.log") as base, chromium_session(prefix="admin-") as s:
        page = open_as(s, base, cookie, "/")
        s.click(page.locator("header").get_by_role("link", name="Admin"))
        s.click(page.get_by_role("link", name="Users"))
        s.click(page.get_by_role("link", name="mateo"))
        expect(page.locator("#memberships-group")).to_contain_text("alpha")
        page.get_by_label("Staff status").check()
        s.click(page.get_by_role("button", name="Save", exact=True))
        expect(page.locator(".messagelist")).to_contain_text("was changed successfully")
        s.shot("users")
        expect_clean(s)
    member.refresh_from_db()
    assert member.is_staff
