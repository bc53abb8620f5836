"""The pages of accounts: signing up from an invitation's link, inviting while the mail server is down, changing
and resetting a password (the reset mail read from the file backend), the open sign-up, the admin for staff.

Every bad value answers the form again with the error at its field and stores nothing. Personas are conftest's.
"""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.utils import timezone

from jobs import services
from jobs.models import Invitation, Membership
from tests.jobs.conftest import mails

pytestmark = pytest.mark.django_db

PASSWORD = "tall-orange-kettle-41"
NEW_PASSWORD = "quiet-violet-harbour-7"


def users() -> list[str]:
    return list(get_user_model().objects.order_by("username").values_list("username", flat=True))


def field_errors(response) -> dict[str, str]:
    """The error texts of the page's fields (``jobs/partials/field.html``), by the field's input name."""
    page = response.content.decode()
    found = re.findall(r'<div class="field has-error">.*?name="(\w+)".*?<span class="error">(.*?)</span>', page, re.S)
    return dict(found)


def signup(client: Client, url: str, username: str = "nora", password: str = PASSWORD, again: str | None = None):
    return client.post(url, {"username": username, "password1": password, "password2": again or password})


@pytest.fixture
def invitation(owner, team) -> Invitation:
    return services.member_invite(user=owner, team=team, who="nora@example.org", role=Membership.Role.VIEWER)


@pytest.fixture
def invite_url(invitation) -> str:
    return f"/invites/{invitation.token}/"


# --- an invitation's link, not logged in --------------------------------------------------------------------


def test_the_link_offers_a_sign_up_and_a_login(client, invite_url):
    page = client.get(invite_url)
    assert page.status_code == 200
    text = page.content.decode()
    assert "olivia invites you to the team alpha as <strong>viewer</strong>" in text
    assert all(f'name="{name}"' in text for name in ("username", "password1", "password2"))
    assert f'href="/login/?next={invite_url}"' in text


def test_signing_up_logs_in_and_joins_with_the_invited_role(client, invite_url, invitation, team):
    response = signup(client, invite_url)
    assert response["Location"] == f"/teams/{team.pk}/"
    page = client.get(response["Location"])
    assert "Welcome, nora: you joined alpha as viewer." in page.content.decode()
    assert '<span class="tag">you: viewer</span>' in page.content.decode()
    nora = get_user_model().objects.get(username="nora")
    assert nora.email == "nora@example.org" and nora.check_password(PASSWORD)
    assert Membership.objects.get(user=nora, team=team).role == Membership.Role.VIEWER
    # the new account logs in with its password later on
    fresh = Client()
    assert fresh.post("/login/", {"username": "nora", "password": PASSWORD})["Location"] == "/"
    # and the link is spent
    again = Client().get(invite_url)
    assert again.status_code == 410 and "has been used already" in again.content.decode()


@pytest.mark.parametrize(
    ("username", "password", "again", "field", "message"),
    [
        ("nora", PASSWORD, "tall-orange-kettle-42", "password2", "The two password fields didn’t match."),
        ("nora", "password123", None, "password2", "This password is too common."),
        ("nora", "2718281828459", None, "password2", "This password is entirely numeric."),
        ("nora", "kettle", None, "password2", "This password is too short."),
        ("Olivia", PASSWORD, None, "username", "A user with that username already exists."),
        ("nora smith", PASSWORD, None, "username", "Enter a valid username."),
        ("", PASSWORD, None, "username", "This field is required."),
    ],
)
def test_a_bad_value_at_sign_up_is_shown_at_its_field(
    client, invite_url, invitation, username, password, again, field, message
):
    response = signup(client, invite_url, username, password, again)
    assert response.status_code == 200
    assert field_errors(response)[field].startswith(message), field_errors(response)
    assert users() == ["olivia"]
    invitation.refresh_from_db()
    assert invitation.accepted_at is None and "_auth_user_id" not in client.session


@pytest.mark.parametrize("verb", ["get", "post"])
def test_an_expired_link_is_a_clear_410(settings, client, invite_url, invitation, verb):
    settings.KDWEB_INVITATION_DAYS = 2
    Invitation.objects.filter(pk=invitation.pk).update(created_at=timezone.now() - timedelta(days=2, minutes=1))
    response = signup(client, invite_url) if verb == "post" else client.get(invite_url)
    assert response.status_code == 410
    assert "This invitation expired on" in response.content.decode()
    assert users() == ["olivia"]


def test_an_unknown_link_is_a_clear_404(client):
    response = client.get("/invites/no-such-token/")
    assert response.status_code == 404 and "This invitation link is unknown" in response.content.decode()


def test_a_link_used_while_the_form_was_open_makes_no_account(client, invite_url, invitation, outsider):
    services.invitation_accept(user=outsider, token=invitation.token)
    response = signup(client, invite_url)
    assert response.status_code == 410 and "has been used already" in response.content.decode()
    assert users() == ["olivia", "oscar"]


# --- inviting while the mail cannot leave -------------------------------------------------------------------


def test_an_invitation_is_saved_and_its_link_shown_when_the_mail_fails(smtp_down, login, owner, team):
    client = login(owner)
    response = client.post(f"/teams/{team.pk}/invite/", {"who": "new@example.org", "role": "member"})
    assert response.status_code == 302
    page = client.get(response["Location"]).content.decode()
    invitation = Invitation.objects.get(email="new@example.org")
    link = f"http://testserver/invites/{invitation.token}/"
    assert (
        '<p class="flash warning">The invitation is saved, but the mail to new@example.org could not be sent: '
        f"pass on its link yourself: {link}</p>"
    ) in page


def test_the_invitation_mail_lands_in_the_file_backend(mail_dir, login, owner, team):
    login(owner).post(f"/teams/{team.pk}/invite/", {"who": "new@example.org", "role": "member"})
    [text] = mails(mail_dir)
    token = Invitation.objects.get(email="new@example.org").token
    assert f"http://testserver/invites/{token}/" in text and "as member" in text


# --- passwords -------------------------------------------------------------------------------------------


@pytest.fixture
def nora(team):
    user = get_user_model().objects.create_user("nora", email="nora@example.org", password=PASSWORD)
    Membership.objects.create(team=team, user=user, role=Membership.Role.MEMBER)
    return user


def test_a_password_is_changed_when_logged_in(client, nora):
    client.force_login(nora)
    assert 'href="/account/password/"' in client.get("/").content.decode()
    form = {"old_password": PASSWORD, "new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD}
    assert client.post("/account/password/", form)["Location"] == "/account/password/done/"
    nora.refresh_from_db()
    assert nora.check_password(NEW_PASSWORD)
    assert client.get("/").status_code == 200  # still logged in


@pytest.mark.parametrize(
    ("old", "new", "again", "field", "message"),
    [
        ("wrong-old-password", NEW_PASSWORD, NEW_PASSWORD, "old_password", "Your old password was entered incorrectly"),
        (PASSWORD, NEW_PASSWORD, "something-else-9", "new_password2", "The two password fields didn’t match."),
        (PASSWORD, "qwerty123", "qwerty123", "new_password2", "This password is too common."),
    ],
)
def test_a_bad_password_change_is_shown_at_its_field(client, nora, old, new, again, field, message):
    client.force_login(nora)
    form = {"old_password": old, "new_password1": new, "new_password2": again}
    response = client.post("/account/password/", form)
    assert response.status_code == 200 and field_errors(response)[field].startswith(message)
    nora.refresh_from_db()
    assert nora.check_password(PASSWORD)


def test_a_reset_mail_arrives_and_its_link_sets_a_new_password(mail_dir, settings, nora):
    client = Client(REMOTE_ADDR="203.0.113.20")
    assert 'href="/account/reset/"' in client.get("/login/").content.decode()
    # too many wrong guesses lock the name (django-axes) ...
    for _ in range(settings.AXES_FAILURE_LIMIT):
        client.post("/login/", {"username": "nora", "password": "wrong"})
    assert client.post("/login/", {"username": "nora", "password": PASSWORD}).status_code == 429
    # ... the mailbox's owner asks for a reset
    response = client.post("/account/reset/", {"email": "NORA@example.org"})
    assert response["Location"] == "/account/reset/sent/"
    [text] = mails(mail_dir)
    assert "To: nora@example.org" in text and "Subject: Reset your password on kdweb" in text
    link = re.search(r"http://testserver(/account/reset/\S+/\S+/)", text).group(1)
    form_page = client.get(link, follow=True)  # Django moves the token into the session first
    assert form_page.status_code == 200 and 'name="new_password1"' in form_page.content.decode()
    set_url = form_page.redirect_chain[-1][0]
    weak = client.post(set_url, {"new_password1": "password123", "new_password2": "password123"})
    assert field_errors(weak)["new_password2"].startswith("This password is too common.")
    done = client.post(set_url, {"new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD})
    assert done["Location"] == "/account/reset/done/"
    nora.refresh_from_db()
    assert nora.check_password(NEW_PASSWORD)
    # the new password gets through the lock; the link is spent
    assert client.post("/login/", {"username": "nora", "password": NEW_PASSWORD})["Location"] == "/"
    spent = Client().get(link, follow=True)
    assert "This link does not work any more" in spent.content.decode()


def test_a_reset_for_an_unknown_address_says_the_same_and_mails_nothing(mail_dir, client, nora):
    assert client.post("/account/reset/", {"email": "nobody@example.org"})["Location"] == "/account/reset/sent/"
    assert mails(mail_dir) == []


def test_a_reset_whose_mail_fails_answers_as_usual(smtp_down, client, nora):
    assert client.post("/account/reset/", {"email": "nora@example.org"})["Location"] == "/account/reset/sent/"


# --- the open sign-up -------------------------------------------------------------------------------------


def test_sign_up_is_closed_by_default(client):
    assert client.get("/signup/").status_code == 404
    assert (
        client.post("/signup/", {"username": "nora", "password1": PASSWORD, "password2": PASSWORD}).status_code == 404
    )
    assert 'href="/signup/"' not in client.get("/login/").content.decode()
    assert users() == []


def test_the_open_sign_up_makes_an_account_without_a_team(settings, client, owner):
    settings.KDWEB_SIGNUP = True
    assert 'href="/signup/"' in client.get("/login/").content.decode()
    bad = signup(client, "/signup/", "OLIVIA")
    assert field_errors(bad)["username"] == "A user with that username already exists."
    # an address is not asked: nobody confirms it, and an invitation to a known address joins at once
    response = client.post(
        "/signup/", {"username": "nora", "email": "olivia@example.org", "password1": PASSWORD, "password2": PASSWORD}
    )
    assert response["Location"] == "/teams/"
    page = client.get("/teams/").content.decode()
    assert "Welcome, nora. Create a team, or ask an owner to invite you." in page
    assert "You are in no team yet" in page
    assert get_user_model().objects.get(username="nora").email == ""
    assert client.get("/signup/")["Location"] == "/teams/"  # logged in already
    runs = client.get("/").content.decode()
    assert "You are in no team yet:" in runs and 'href="/teams/">create one</a>' in runs


# --- the admin -----------------------------------------------------------------------------------------------


def test_staff_administer_users_and_their_teams_in_the_admin(client, owner, member, team):
    admin = get_user_model().objects.create_user("ada", is_staff=True, is_superuser=True)
    client.force_login(admin)
    assert 'href="/admin/"' in client.get("/").content.decode()
    listing = client.get("/admin/auth/user/").content.decode()
    assert "olivia" in listing and "mateo" in listing
    change = client.get(f"/admin/auth/user/{member.pk}/change/").content.decode()
    assert "memberships-0-role" in change  # the user's teams and roles, on their page
    added = client.post(
        "/admin/auth/user/add/",
        {
            "username": "nina",
            "usable_password": "true",
            "password1": PASSWORD,
            "password2": PASSWORD,
            # the teams inline, with a first membership
            "memberships-TOTAL_FORMS": "1",
            "memberships-INITIAL_FORMS": "0",
            "memberships-0-team": str(team.pk),
            "memberships-0-role": "viewer",
        },
    )
    assert added.status_code == 302, added.content.decode()[:2000]
    nina = get_user_model().objects.get(username="nina")
    assert nina.check_password(PASSWORD)
    assert Membership.objects.get(user=nina).team == team
    assert client.get("/admin/jobs/invitation/").status_code == 200


def test_the_admin_refuses_users_who_are_not_staff(login, owner):
    client = login(owner)
    assert client.get("/admin/auth/user/")["Location"].startswith("/admin/login/")
    assert 'href="/admin/"' not in client.get("/").content.decode()
