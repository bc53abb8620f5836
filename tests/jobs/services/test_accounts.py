"""Accounts (``jobs.services.accounts``) and the invitation rules that make one: every bad value is a field error
that stores nothing; an invitation link works once and for ``KDWEB_INVITATION_DAYS``; a mail that cannot leave
is reported, never raised. Mail goes through real backends: the file backend into a temporary folder, and the
SMTP backend aimed at a local port where nothing listens.
"""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.utils import timezone

from jobs import selectors, services
from jobs.models import Invitation, Membership
from tests.jobs.conftest import FILE_BACKEND, REPO, mails

pytestmark = pytest.mark.django_db

PASSWORD = "tall-orange-kettle-41"


def users() -> list[str]:
    return list(get_user_model().objects.order_by("username").values_list("username", flat=True))


def expire(invitation: Invitation, days: float) -> None:
    """Make ``invitation`` as old as ``days``."""
    Invitation.objects.filter(pk=invitation.pk).update(created_at=timezone.now() - timedelta(days=days))


@pytest.fixture
def invitation(owner, team) -> Invitation:
    return services.member_invite(user=owner, team=team, who="nora@example.org", role=Membership.Role.VIEWER)


# --- account_create ---------------------------------------------------------------------------------------------


def test_an_account_has_the_password_hashed_and_the_address(db):
    user = services.account_create(username=" nora ", password=PASSWORD, email="nora@example.org")
    user.refresh_from_db()
    assert (user.username, user.email, user.is_active, user.is_staff) == ("nora", "nora@example.org", True, False)
    assert user.check_password(PASSWORD) and user.password != PASSWORD


@pytest.mark.parametrize(
    ("username", "password", "field", "message"),
    [
        ("", PASSWORD, "username", "This field cannot be blank."),
        ("nora smith", PASSWORD, "username", "Enter a valid username."),
        ("OLIVIA", PASSWORD, "username", services.USERNAME_TAKEN),  # olivia exists: names differ beyond case
        ("nora", "short1", "password", "This password is too short."),
        ("nora", "password123", "password", "This password is too common."),
        ("nora", "4815162342108", "password", "This password is entirely numeric."),
        ("kettlewell", "kettlewell1", "password", "The password is too similar to the username."),
    ],
)
def test_a_bad_value_is_a_field_error_and_stores_nothing(owner, username, password, field, message):
    with pytest.raises(ValidationError) as info:
        services.account_create(username=username, password=password)
    assert any(m.startswith(message) for m in info.value.message_dict[field]), info.value.message_dict
    assert users() == ["olivia"]


# --- invitations: sign-up, once, in time ---------------------------------------------------------------------


def test_signing_up_from_an_invitation_joins_its_team_with_its_role(invitation, team):
    membership = services.invitation_signup(token=invitation.token, username="nora", password=PASSWORD)
    assert (membership.user.username, membership.user.email) == ("nora", "nora@example.org")
    assert (membership.team, membership.role) == (team, Membership.Role.VIEWER)
    invitation.refresh_from_db()
    assert invitation.accepted_by == membership.user and invitation.accepted_at is not None


def test_a_bad_password_at_sign_up_leaves_the_invitation_unused(invitation):
    with pytest.raises(ValidationError) as info:
        services.invitation_signup(token=invitation.token, username="nora", password="password123")
    assert list(info.value.message_dict) == ["password"]
    assert users() == ["olivia"]
    assert services.invitation_open(invitation.token) == invitation  # still works


@pytest.mark.parametrize(("days", "works"), [(6.9, True), (7.01, False)])
def test_an_invitation_works_for_its_days(settings, invitation, days, works):
    assert settings.KDWEB_INVITATION_DAYS == 7
    expire(invitation, days)
    assert (invitation in selectors.invitations_pending(invitation.team)) is works
    if works:
        services.invitation_signup(token=invitation.token, username="nora", password=PASSWORD)
        assert users() == ["nora", "olivia"]
        return
    with pytest.raises(ValidationError) as info:
        services.invitation_signup(token=invitation.token, username="nora", password=PASSWORD)
    assert info.value.code == "expired"
    assert "This invitation expired on" in info.value.messages[0] and "of alpha" in info.value.messages[0]
    assert users() == ["olivia"]


def test_a_used_invitation_makes_no_second_account(invitation):
    services.invitation_signup(token=invitation.token, username="nora", password=PASSWORD)
    with pytest.raises(ValidationError) as info:
        services.invitation_signup(token=invitation.token, username="nina", password=PASSWORD)
    assert info.value.code == "used"
    assert users() == ["nora", "olivia"]


# --- mail that may not leave ------------------------------------------------------------------------------


def test_an_invitation_mail_lands_in_the_file_backend(mail_dir, invitation):
    assert services.invitation_send(invitation, "http://kd.test") is True
    [text] = mails(mail_dir)
    assert "To: nora@example.org" in text and "Subject: You are invited to the team alpha on kdweb" in text
    assert f"http://kd.test/invites/{invitation.token}/" in text


def test_a_mail_to_a_server_that_refuses_is_reported_not_raised(smtp_down, invitation, caplog):
    assert services.invitation_send(invitation, "http://kd.test") is False
    assert "could not send the mail 'You are invited to the team alpha on kdweb' to nora@example.org" in caplog.text
    assert "ConnectionRefusedError" in caplog.text


def test_a_mail_folder_that_cannot_be_made_is_reported_not_raised(settings, tmp_path, invitation):
    (tmp_path / "a-file").write_text("")
    settings.EMAIL_BACKEND, settings.EMAIL_FILE_PATH = FILE_BACKEND, tmp_path / "a-file" / "mail"
    assert services.invitation_send(invitation) is False


# --- which backend, from the environment ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "backend"),
    [
        ({}, "console"),  # the local demo: `make up` prints every mail
        ({"KDWEB_DEBUG": "False", "DJANGO_SECRET_KEY": "s" * 50}, "filebased"),  # kept in KDWEB_DATA_DIR/mail
        ({"EMAIL_HOST": "smtp.example.org"}, "smtp"),
        ({"EMAIL_HOST": "smtp.example.org", "KDWEB_EMAIL_BACKEND": "file"}, "filebased"),
        ({"KDWEB_EMAIL_BACKEND": "django.core.mail.backends.locmem.EmailBackend"}, "locmem"),
    ],
)
def test_the_mail_backend_comes_from_the_environment(tmp_path, env, backend):
    """Settings are read once per process: each case is a process of its own."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("EMAIL_", "KDWEB_"))}
    script = "from django.conf import settings as s; print(s.EMAIL_BACKEND, s.EMAIL_FILE_PATH, s.EMAIL_TIMEOUT)"
    out = subprocess.run(
        [sys.executable, "-c", script],
        env={**clean, "DJANGO_SETTINGS_MODULE": "kdweb.settings", "KDWEB_DATA_DIR": str(tmp_path), **env},
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert out == [f"django.core.mail.backends.{backend}.EmailBackend", str(tmp_path / "mail"), "10.0"]
