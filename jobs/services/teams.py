"""Teams, memberships, invitations and public share links."""

from __future__ import annotations

from datetime import datetime

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db import transaction
from django.urls import reverse
from django.utils import timezone

from jobs.live.events import share_link_closed_on_commit
from jobs.models import Invitation, Membership, Run, ShareLink, Study, Team
from jobs.permissions import require_owner, require_write
from jobs.services.accounts import account_create, mail_send

INVITATION_SUBJECT = "You are invited to the team {team} on kdweb"
INVITATION_BODY = "{inviter} invites you to the team {team} on kdweb, as {role}.\n\nJoin it here (once): {url}\n"
LAST_OWNER = "A team keeps at least one owner: make someone else an owner first."
# why an invitation link does not open (the ValidationError's code: the page answers 404 or 410 with it)
INVITATION_REFUSED = {
    "unknown": "This invitation link is unknown: check that it was copied whole, or ask for a new one.",
    "used": "This invitation has been used already: log in, or ask an owner of the team for a new one.",
    "expired": "This invitation expired on {date}: ask an owner of {team} for a new one.",
}


@transaction.atomic
def team_create(*, user, name: str) -> Team:
    """A new team, with its creator as its first owner."""
    name = name.strip()
    if not name:
        raise ValidationError({"name": "Give the team a name."})
    if Team.objects.filter(name__iexact=name).exists():
        raise ValidationError({"name": f"There is already a team named {name!r}."})
    team = Team.objects.create(name=name)
    Membership.objects.create(team=team, user=user, role=Membership.Role.OWNER)
    return team


def invitation_url(invitation: Invitation, site: str = "") -> str:
    """The link that accepts ``invitation``; absolute when ``site`` (``scheme://host``) is given."""
    return f"{site}{reverse('invitation_accept', args=[invitation.token])}"


@transaction.atomic
def member_invite(*, user, team: Team, who: str, role: str = Membership.Role.MEMBER) -> Membership | Invitation:
    """Add someone to ``team`` (owners only), by username or e-mail address.

    A known username or e-mail address becomes a membership at once; an unknown address gets an
    Invitation, which the caller mails with :func:`invitation_send` once this has committed (a rolled-back
    invitation must not reach anyone) and whose link it shows the inviter, to pass on.
    """
    require_owner(user, team)
    who = who.strip()
    if role not in Membership.Role.values:
        raise ValidationError({"role": f"Choose one of {', '.join(Membership.Role.values)}."})
    users = get_user_model().objects.filter(is_active=True)
    by_email = "@" in who
    invitee = users.filter(email__iexact=who).order_by("pk").first() if by_email else users.filter(username=who).first()
    if invitee is None and not by_email:
        raise ValidationError({"who": f"No user is named {who!r}; invite them by e-mail address instead."})
    if invitee is None:
        return Invitation.objects.create(team=team, email=who, role=role, invited_by=user)
    if Membership.objects.filter(team=team, user=invitee).exists():
        raise ValidationError({"who": f"{invitee.get_username()} is already a member of {team.name}."})
    return Membership.objects.create(team=team, user=invitee, role=role)


def invitation_send(invitation: Invitation, site: str = "") -> bool:
    """Mail the invitation's link to its address; ``False`` when the mail could not leave (the link still works)."""
    inviter = invitation.invited_by.get_username() if invitation.invited_by else "Someone"
    body = INVITATION_BODY.format(
        inviter=inviter, team=invitation.team.name, role=invitation.role, url=invitation_url(invitation, site)
    )
    return mail_send(INVITATION_SUBJECT.format(team=invitation.team.name), body, invitation.email)


def invitation_open(token: str, *, lock: bool = False) -> Invitation:
    """The invitation of ``token`` while it can be used (not yet, and not expired); else a ValidationError
    whose code (``unknown``, ``used``, ``expired``) says why. ``lock`` (in a transaction): until it commits."""
    invitations = Invitation.objects.select_related("team", "invited_by")
    invitation = (invitations.select_for_update(of=("self",)) if lock else invitations).filter(token=token).first()
    if invitation is None:
        raise ValidationError(INVITATION_REFUSED["unknown"], code="unknown")
    if invitation.accepted_at is not None:
        raise ValidationError(INVITATION_REFUSED["used"], code="used")
    if invitation.expires_at <= timezone.now():
        date, team = f"{invitation.expires_at:%Y-%m-%d}", invitation.team.name
        raise ValidationError(INVITATION_REFUSED["expired"].format(date=date, team=team), code="expired")
    return invitation


@transaction.atomic
def invitation_accept(*, user, token: str) -> Membership:
    """Join the invitation's team with its role; an invitation is used once, within its days."""
    invitation = invitation_open(token, lock=True)
    if Membership.objects.filter(team=invitation.team, user=user).exists():
        raise ValidationError(f"You are already a member of {invitation.team.name}.")
    invitation.accepted_by, invitation.accepted_at = user, timezone.now()
    invitation.save(update_fields=["accepted_by", "accepted_at"])
    return Membership.objects.create(team=invitation.team, user=user, role=invitation.role)


@transaction.atomic
def invitation_signup(*, token: str, username: str, password: str) -> Membership:
    """A new account for the invited address (checked as :func:`account_create` does), in the invitation's
    team with its role: both, or neither (a used or expired link creates no account)."""
    invitation = invitation_open(token, lock=True)
    user = account_create(username=username, password=password, email=invitation.email)
    return invitation_accept(user=user, token=token)


def _keep_an_owner(membership: Membership) -> None:
    """Refuse a change that would leave the membership's team without an owner (its owners locked first,
    so two owners demoting each other at once cannot both succeed)."""
    owners = Membership.objects.select_for_update().filter(team_id=membership.team_id, role=Membership.Role.OWNER)
    if membership.role == Membership.Role.OWNER and list(owners.values_list("pk", flat=True)) == [membership.pk]:
        raise ValidationError(LAST_OWNER)


@transaction.atomic
def member_set_role(*, user, membership: Membership, role: str) -> Membership:
    """Change a member's role (owners only)."""
    require_owner(user, membership.team)
    if role not in Membership.Role.values:
        raise ValidationError({"role": f"Choose one of {', '.join(Membership.Role.values)}."})
    membership = Membership.objects.select_for_update().get(pk=membership.pk)
    if role != Membership.Role.OWNER:
        _keep_an_owner(membership)
    membership.role = role
    membership.save(update_fields=["role"])
    return membership


@transaction.atomic
def member_remove(*, user, membership: Membership) -> None:
    """Take someone out of a team (owners only)."""
    require_owner(user, membership.team)
    membership = Membership.objects.select_for_update().get(pk=membership.pk)
    _keep_an_owner(membership)
    membership.delete()


@transaction.atomic
def share_link_create(
    *, user, target: Run | Study, expires_at: datetime | None = None, allow_downloads: bool = False
) -> ShareLink:
    """A public read-only link to a run or a study (owners and members of its team)."""
    require_write(user, target.team)
    if expires_at is not None and expires_at <= timezone.now():
        raise ValidationError({"expires_at": "The expiry must be in the future."})
    kind = "run" if isinstance(target, Run) else "study"
    return ShareLink.objects.create(
        team=target.team, allow_downloads=allow_downloads, expires_at=expires_at, created_by=user, **{kind: target}
    )


@transaction.atomic
def share_link_revoke(*, user, link: ShareLink) -> ShareLink:
    """Revoke a link for good (owners and members of its team); revoking twice changes nothing."""
    require_write(user, link.team)
    link = ShareLink.objects.select_for_update().get(pk=link.pk)
    if link.revoked_at is None:
        link.revoked_at = timezone.now()
        link.save(update_fields=["revoked_at"])
        share_link_closed_on_commit(link.pk)
    return link
