"""Teams: creating one, inviting by username or e-mail, accepting an invitation once, roles and the last owner.

The services first (``jobs.services``, "teams and sharing"), then the pages of ``jobs.pages.teams``. Personas are
conftest's: ``owner``, ``member`` and ``viewer`` of team alpha, ``outsider`` of beta. E-mail goes to Django's
locmem backend (``mail.outbox``), which the test runner installs.
"""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.core import mail
from django.core.exceptions import PermissionDenied, ValidationError

from jobs import services
from jobs.models import Invitation, Membership, Team
from jobs.permissions import OWNERS_ONLY

pytestmark = pytest.mark.django_db

Role = Membership.Role


def new_user(username: str, email: str = ""):
    return get_user_model().objects.create_user(username=username, email=email)


def role_of(user, team: Team) -> str | None:
    return Membership.objects.filter(team=team, user=user).values_list("role", flat=True).first()


# --- services ----------------------------------------------------------------------------------------------


def test_the_creator_of_a_team_is_its_owner(outsider):
    team = services.team_create(user=outsider, name="  gamma ")
    assert team.name == "gamma"
    assert role_of(outsider, team) == Role.OWNER


def test_team_names_are_unique_whatever_their_case(owner, team):
    with pytest.raises(ValidationError) as info:
        services.team_create(user=owner, name="ALPHA")
    assert info.value.message_dict == {"name": ["There is already a team named 'ALPHA'."]}


def test_a_username_joins_at_once_with_its_role(owner, team):
    newcomer = new_user("nora")
    membership = services.member_invite(user=owner, team=team, who="nora", role=Role.VIEWER)
    assert (membership.user, membership.role) == (newcomer, Role.VIEWER)
    assert mail.outbox == []


def test_a_users_email_address_joins_at_once(owner, team):
    newcomer = new_user("nora", email="Nora@Example.org")
    membership = services.member_invite(user=owner, team=team, who="nora@example.org")
    assert (membership.user, membership.role) == (newcomer, Role.MEMBER)


def test_an_unknown_address_gets_an_invitation_by_mail(owner, team):
    invitation = services.member_invite(user=owner, team=team, who="new@example.org")
    assert isinstance(invitation, Invitation)
    assert (invitation.email, invitation.role, invitation.invited_by) == ("new@example.org", Role.MEMBER, owner)
    assert len(invitation.token) >= 43  # 256 random bits, URL-safe
    assert mail.outbox == []  # the caller mails it, once the invitation is committed
    assert services.invitation_send(invitation, "http://kd.test") is True
    [message] = mail.outbox
    assert message.to == ["new@example.org"]
    assert message.subject == "You are invited to the team alpha on kdweb"
    assert f"http://kd.test/invites/{invitation.token}/" in message.body


def test_an_unknown_username_is_refused(owner, team):
    with pytest.raises(ValidationError) as info:
        services.member_invite(user=owner, team=team, who="nobody")
    assert "No user is named 'nobody'" in info.value.message_dict["who"][0]


def test_a_member_is_not_invited_twice(owner, member, team):
    with pytest.raises(ValidationError) as info:
        services.member_invite(user=owner, team=team, who=member.username)
    assert info.value.message_dict == {"who": ["mateo is already a member of alpha."]}


@pytest.mark.parametrize("name", ["member", "viewer", "outsider"])
def test_only_owners_invite(request, team, name):
    new_user("nora")
    with pytest.raises(PermissionDenied) as info:
        services.member_invite(user=request.getfixturevalue(name), team=team, who="nora")
    assert str(info.value) == OWNERS_ONLY
    assert not Membership.objects.filter(user__username="nora").exists()


def test_an_invitation_is_accepted_once(owner, team, outsider):
    invitation = services.member_invite(user=owner, team=team, who="oscar@example.org", role=Role.VIEWER)
    membership = services.invitation_accept(user=outsider, token=invitation.token)
    assert (membership.team, membership.role) == (team, Role.VIEWER)
    invitation.refresh_from_db()
    assert invitation.accepted_by == outsider and invitation.accepted_at is not None
    with pytest.raises(ValidationError, match="has been used already") as info:
        services.invitation_accept(user=new_user("nora"), token=invitation.token)
    assert info.value.code == "used"
    with pytest.raises(ValidationError, match="invitation link is unknown") as info:
        services.invitation_accept(user=outsider, token="not-a-token")
    assert info.value.code == "unknown"


def test_an_invitation_does_not_change_a_members_role(owner, viewer, team):
    invitation = services.member_invite(user=owner, team=team, who="vera@example.org", role=Role.OWNER)
    with pytest.raises(ValidationError, match="already a member of alpha"):
        services.invitation_accept(user=viewer, token=invitation.token)
    assert role_of(viewer, team) == Role.VIEWER


def test_owners_set_roles_and_remove_members(owner, member, viewer, team):
    services.member_set_role(user=owner, membership=Membership.objects.get(user=viewer), role=Role.MEMBER)
    assert role_of(viewer, team) == Role.MEMBER
    services.member_remove(user=owner, membership=Membership.objects.get(user=member))
    assert role_of(member, team) is None


@pytest.mark.parametrize("name", ["member", "viewer"])
def test_only_owners_manage_members(request, owner, team, name):
    user = request.getfixturevalue(name)
    target = Membership.objects.get(user=owner)
    with pytest.raises(PermissionDenied):
        services.member_set_role(user=user, membership=target, role=Role.VIEWER)
    with pytest.raises(PermissionDenied):
        services.member_remove(user=user, membership=target)
    assert role_of(owner, team) == Role.OWNER


def test_a_team_keeps_an_owner(owner, member, team):
    mine = Membership.objects.get(user=owner)
    for change in (
        lambda: services.member_set_role(user=owner, membership=mine, role=Role.MEMBER),
        lambda: services.member_remove(user=owner, membership=mine),
    ):
        with pytest.raises(ValidationError, match="A team keeps at least one owner"):
            change()
    assert role_of(owner, team) == Role.OWNER
    # with a second owner, the first may step down
    services.member_set_role(user=owner, membership=Membership.objects.get(user=member), role=Role.OWNER)
    services.member_set_role(user=owner, membership=mine, role=Role.VIEWER)
    assert (role_of(owner, team), role_of(member, team)) == (Role.VIEWER, Role.OWNER)


def test_an_unknown_role_is_refused(owner, member, team):
    with pytest.raises(ValidationError):
        services.member_set_role(user=owner, membership=Membership.objects.get(user=member), role="admin")
    with pytest.raises(ValidationError):
        services.member_invite(user=owner, team=team, who="x@example.org", role="admin")


# --- pages -------------------------------------------------------------------------------------------------


def test_the_teams_page_lists_my_teams_with_my_role(login, viewer, other_team):
    page = login(viewer).get("/teams/").content.decode()
    assert '<a href="/teams/' in page and ">alpha</a>" in page
    assert "beta" not in page
    assert '<span class="tag">viewer</span>' in page


def test_a_team_is_created_from_the_page(login, viewer):
    client = login(viewer)
    response = client.post("/teams/", {"name": "gamma"}, follow=True)
    team = Team.objects.get(name="gamma")
    assert response.redirect_chain == [(f"/teams/{team.pk}/", 302)]
    assert b"Created team gamma: you are its owner." in response.content
    assert role_of(viewer, team) == Role.OWNER
    again = client.post("/teams/", {"name": "gamma"})
    assert again.status_code == 200 and b"There is already a team named" in again.content


def test_owners_see_the_management_forms_and_others_do_not(login, owner, member, viewer, team):
    owner_page = login(owner).get(f"/teams/{team.pk}/").content.decode()
    assert f'action="/teams/{team.pk}/invite/"' in owner_page
    assert "/remove/" in owner_page and "Pending invitations" in owner_page
    for user in (member, viewer):
        page = login(user).get(f"/teams/{team.pk}/").content.decode()
        assert all(name in page for name in ("olivia", "mateo", "vera"))
        assert "/invite/" not in page and "/remove/" not in page and "Pending invitations" not in page


def test_an_invitation_by_email_from_the_page_shows_its_link(login, owner, team):
    client = login(owner)
    response = client.post(f"/teams/{team.pk}/invite/", {"who": "new@example.org", "role": "viewer"}, follow=True)
    invitation = Invitation.objects.get(email="new@example.org")
    link = f"http://testserver/invites/{invitation.token}/"
    assert f"Invitation mailed to new@example.org; you can also pass on its link: {link}".encode() in response.content
    assert f'value="{link}"'.encode() in response.content  # in the pending invitations
    assert [m.to for m in mail.outbox] == [["new@example.org"]]


def test_the_invitation_link_joins_the_team(client, login, owner, team):
    invitation = services.member_invite(user=owner, team=team, who="nora@example.org", role=Role.VIEWER)
    url = f"/invites/{invitation.token}/"
    nora = new_user("nora")
    client = login(nora)
    page = client.get(url)
    assert b"olivia invites you to the team alpha as <strong>viewer</strong>" in page.content
    response = client.post(url, follow=True)
    assert response.redirect_chain == [(f"/teams/{team.pk}/", 302)]
    assert b"You joined alpha as viewer." in response.content
    assert role_of(nora, team) == Role.VIEWER
    assert client.get(url).status_code == 410  # used
    assert client.get("/invites/not-a-token/").status_code == 404


def test_roles_are_changed_and_members_removed_from_the_page(login, owner, member, viewer, team):
    client = login(owner)
    vera = Membership.objects.get(user=viewer)
    response = client.post(f"/teams/{team.pk}/members/{vera.pk}/role/", {"role": "member"}, follow=True)
    assert b"vera is now member." in response.content
    mine = Membership.objects.get(user=owner)
    response = client.post(f"/teams/{team.pk}/members/{mine.pk}/remove/", follow=True)
    assert b"A team keeps at least one owner" in response.content
    mateo = Membership.objects.get(user=member)
    response = client.post(f"/teams/{team.pk}/members/{mateo.pk}/remove/", follow=True)
    assert b"Removed mateo from alpha." in response.content
    assert (role_of(viewer, team), role_of(member, team)) == (Role.MEMBER, None)


def test_a_membership_of_another_team_is_404(login, owner, team, outsider, other_team):
    theirs = Membership.objects.get(user=outsider)
    client = login(owner)
    assert client.post(f"/teams/{team.pk}/members/{theirs.pk}/remove/").status_code == 404
    assert client.post(f"/teams/{other_team.pk}/members/{theirs.pk}/remove/").status_code == 404
    assert role_of(outsider, other_team) == Role.OWNER
