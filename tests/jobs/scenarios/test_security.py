"""Hygiene of a deployed kdweb: login throttling, the Content-Security-Policy, real error pages, the demo login
and debug pages kept to a local instance, hub ids offline, and the settings behind a TLS-terminating proxy.

Settings that are read once at start (KDWEB_SECURE, HF_HUB_OFFLINE) are tested in processes of their own.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.test import Client, RequestFactory
from django.views.defaults import server_error

from kdweb.launcher import Launcher, parse_args
from tests.jobs.browser import chromium_session, open_as, session_cookie
from tests.jobs.conftest import REPO, daphne, process_env
from tests.jobs.pages.test_public import finished_run
from tests.jobs.scenarios.test_browser_live import expect_clean

PASSWORD = "a-right-password"


def _login(client: Client, username: str, password: str):
    return client.post("/login/", {"username": username, "password": password})


# --- login throttling -----------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_logins_are_refused_after_too_many_wrong_passwords_for_that_user_and_address(settings):
    users = get_user_model().objects
    users.create_user("mallory-target", password=PASSWORD)
    users.create_user("bystander", password=PASSWORD)
    attacker = Client(REMOTE_ADDR="203.0.113.9")
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        assert _login(attacker, "mallory-target", "wrong").status_code == 200  # the form again, with its error
    locked = _login(attacker, "mallory-target", "wrong")
    assert locked.status_code == 429
    assert "Too many failed logins" in locked.content.decode()
    right = _login(attacker, "mallory-target", PASSWORD)  # the right password does not get through now
    assert right.status_code == 429 and "_auth_user_id" not in attacker.session
    # the lock is on that user from that address: others log in as usual
    assert _login(Client(REMOTE_ADDR="198.51.100.7"), "mallory-target", PASSWORD).status_code == 302
    assert _login(attacker, "bystander", PASSWORD).status_code == 302


@pytest.mark.django_db
def test_a_right_password_before_the_limit_resets_the_count(settings):
    get_user_model().objects.create_user("olga", password=PASSWORD)
    client = Client(REMOTE_ADDR="203.0.113.10")
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        _login(client, "olga", "wrong")
    assert _login(client, "olga", PASSWORD).status_code == 302
    client.logout()
    assert _login(client, "olga", "wrong").status_code == 200


# --- Content-Security-Policy ----------------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/login/", "/", "/api/v1/docs/", "/api/v1/runs/", "/no-such-page/"])
def test_every_answer_carries_the_content_security_policy(client, path):
    policy = client.get(path)["Content-Security-Policy"]
    assert "default-src 'self'" in policy and "script-src 'self';" in policy and "frame-ancestors 'none'" in policy


@pytest.mark.django_db(transaction=True)
def test_pages_run_under_the_policy_in_a_browser(data_dir, owner, team):
    """No script, style, socket or data the pages use is refused (Chromium reports each refusal as an error)."""
    run = finished_run(team)
    cookie = session_cookie(owner)
    with daphne(process_env(data_dir), data_dir / "daphne.log") as base, chromium_session(prefix="csp-") as s:
        for path in ("/", f"/runs/{run.pk}/", f"/compare/?runs={run.pk}", "/runs/new/teacher/", "/api/v1/docs/"):
            page = open_as(s, base, cookie, path)
            page.wait_for_load_state("networkidle")
        page.locator(".swagger-ui .information-container").wait_for()  # Swagger UI started: its script ran
        s.shot("api-docs")
        expect_clean(s)


# --- error pages, debug pages ---------------------------------------------------------------------------------


@pytest.mark.django_db
def test_missing_pages_and_dead_links_show_kdwebs_404_page(client):
    for path in ("/no-such-page/", "/p/not-a-token/"):
        response = client.get(path)
        html = response.content.decode()
        assert response.status_code == 404 and "<h1>Not found</h1>" in html
        assert "URLconf" not in html and "api/v1/" not in html
    api = client.get("/api/v1/runs/1/artifacts/-1/download/")  # no URL pattern: JSON, as the API documents
    assert api.status_code == 404 and api.json() == {"detail": "Not found."}


@pytest.mark.django_db
def test_a_forbidden_change_shows_kdwebs_403_page(login, viewer, queued_run):
    response = login(viewer).post(f"/runs/{queued_run.pk}/cancel/")
    assert response.status_code == 403 and "<h1>Not allowed</h1>" in response.content.decode()


def test_the_500_page_needs_no_request_context():
    response = server_error(RequestFactory().get("/"))
    assert response.status_code == 500 and "<h1>Server error</h1>" in response.content.decode()


def _launcher(*args: str, **env: str) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("KDWEB_", "HF_HUB"))}
    return subprocess.run(
        [sys.executable, "-m", "kdweb.launcher", *args],
        cwd=REPO,
        env={**environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_launcher_keeps_debug_pages_on_a_loopback_address(tmp_path):
    refused = _launcher("--host", "0.0.0.0", "--no-demo", KDWEB_DATA_DIR=str(tmp_path))
    assert refused.returncode == 1
    assert "KDWEB_DEBUG shows Django's debug pages" in refused.stdout and "KDWEB_DEBUG=False" in refused.stdout


@pytest.mark.django_db
def test_the_demo_login_is_a_local_instances_only(settings):
    settings.DEBUG = False
    with pytest.raises(CommandError, match="KDWEB_DEBUG=True"):
        call_command("demo")
    assert not get_user_model().objects.filter(username="demo").exists()


def test_the_launcher_runs_the_demo_and_its_import_folder_only_with_debug(monkeypatch, tmp_path):
    for name in ("KDWEB_DEBUG", "KDWEB_IMPORT_ROOTS", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("KDWEB_DATA_DIR", str(tmp_path))
    local = Launcher(parse_args([]))
    assert local.debug and local.env["KDWEB_IMPORT_ROOTS"] == str(tmp_path / "imports")
    monkeypatch.setenv("KDWEB_DEBUG", "False")
    deployed = Launcher(parse_args([]))
    assert not deployed.debug and "KDWEB_IMPORT_ROOTS" not in deployed.env


# --- hub ids offline --------------------------------------------------------------------------------------------


def test_the_launcher_runs_offline_unless_told_otherwise(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    assert Launcher(parse_args([])).env["HF_HUB_OFFLINE"] == "1"
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    assert Launcher(parse_args([])).env["HF_HUB_OFFLINE"] == "0"


def test_an_offline_hub_id_fails_at_once_with_a_clear_message():
    code = (
        "from distill.config import ConfigError\n"
        "from distill.teachers import load_config\n"
        "try:\n    load_config('some-org/some-model')\n"
        "except ConfigError as exc:\n    print(exc.errors[0][1])\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        capture_output=True,
        text=True,
        timeout=120,  # it answers in seconds (the import); online it waited 23-28 s on the network
    )
    assert "'some-org/some-model' is read as a hub id" in result.stdout, result.stderr
    assert "the hub is offline (HF_HUB_OFFLINE=1)" in result.stdout


# --- behind a TLS-terminating proxy -----------------------------------------------------------------------------

DEPLOY_WARNINGS = ("security.W004", "security.W008", "security.W012", "security.W016")


@pytest.mark.parametrize("secure", ["1", "0"])
def test_check_deploy_is_clean_with_kdweb_secure(secure):
    env = {
        **os.environ,
        "KDWEB_DEBUG": "False",
        "KDWEB_SECURE": secure,
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
        "KDWEB_ALLOWED_HOSTS": "kdweb.example.org",
    }
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy"], cwd=REPO, env=env, capture_output=True, text=True
    )
    found = [w for w in DEPLOY_WARNINGS if w in result.stdout + result.stderr]
    assert found == ([] if secure == "1" else list(DEPLOY_WARNINGS)), result.stdout + result.stderr
