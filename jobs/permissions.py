"""The one place that decides who may see and change what. Pages, APIs and websockets all call it.

An object is visible to the members of its team (any role); changing it needs the owner or member role, and
archiving or deleting it (or managing the team's members) the owner role. Objects of other teams answer 404, so
their existence does not leak.
"""

from __future__ import annotations

from typing import TypeVar

from django.core.exceptions import PermissionDenied
from django.db.models import Model, Q, QuerySet
from django.http import Http404
from django.shortcuts import get_object_or_404
from django.utils import timezone

from jobs.models import Membership, ShareLink, Team

M = TypeVar("M", bound=Model)

READ_ONLY = "Viewers can look but not change anything in this team."
OWNERS_ONLY = "Only the team's owners can manage its members."
OWNERS_DELETE = "Only the team's owners can delete or archive its runs, studies, teachers and data sets."


def teams_for_user(user, *, write: bool = False) -> QuerySet[Team]:
    """Teams the user belongs to (only those where they may write, with ``write``)."""
    if not user.is_authenticated:
        return Team.objects.none()
    memberships = Membership.objects.filter(user=user)
    if write:
        memberships = memberships.exclude(role=Membership.Role.VIEWER)
    return Team.objects.filter(id__in=memberships.values("team_id"))


def get_for_user(queryset: type[M] | QuerySet[M], user, pk: int) -> tuple[M, bool]:
    """``(obj, can_write)`` for an object of one of the user's teams; 404 for anything else."""
    qs = queryset if isinstance(queryset, QuerySet) else queryset.objects.all()
    if not user.is_authenticated:
        raise PermissionDenied
    obj = get_object_or_404(qs.filter(team__memberships__user=user), pk=pk)
    role = Membership.objects.get(team_id=obj.team_id, user=user).role
    return obj, role != Membership.Role.VIEWER


def get_writable(queryset: type[M] | QuerySet[M], user, pk: int) -> M:
    """The object, if the user may change it; 404 for other teams, 403 for viewers."""
    obj, can_write = get_for_user(queryset, user, pk)
    if not can_write:
        raise PermissionDenied(READ_ONLY)
    return obj


def get_all_for_user(queryset: type[M] | QuerySet[M], user, pks: list[int]) -> list[M]:
    """The objects of ``pks`` (in that order), if the user may see every one; 404 if any is missing or of
    another team, so a list cannot probe which ids exist."""
    qs = queryset if isinstance(queryset, QuerySet) else queryset.objects.all()
    if not user.is_authenticated:
        raise PermissionDenied
    found = qs.filter(team__in=teams_for_user(user)).in_bulk(pks)
    if len(found) != len(set(pks)):
        raise Http404("No such object.")
    return [found[pk] for pk in dict.fromkeys(pks)]


def require_write(user, team: Team) -> None:
    """Raise 403 unless the user is an owner or member of ``team``."""
    if not teams_for_user(user, write=True).filter(pk=team.pk).exists():
        raise PermissionDenied(READ_ONLY)


# --- teams and sharing ---------------------------------------------------------------------------------


def team_for_user(user, pk: int) -> tuple[Team, str]:
    """``(team, role)`` for a team the user belongs to; 404 for any other team, 403 when not logged in."""
    if not user.is_authenticated:
        raise PermissionDenied
    membership = get_object_or_404(Membership.objects.select_related("team"), team_id=pk, user=user)
    return membership.team, membership.role


def role_in(user, team_id: int) -> str | None:
    """The user's role in a team (owner, member, viewer), or None when not a member."""
    if not user.is_authenticated:
        return None
    return Membership.objects.filter(team_id=team_id, user=user).values_list("role", flat=True).first()


def rights(user, team_id: int) -> tuple[bool, bool]:
    """``(may change, may archive and delete)`` objects of a team: the owner or member role; the owner role."""
    role = role_in(user, team_id)
    return role in (Membership.Role.OWNER, Membership.Role.MEMBER), role == Membership.Role.OWNER


def require_owner(user, team: Team, message: str = OWNERS_ONLY) -> None:
    """Raise 403 (saying ``message``) unless the user is an owner of ``team``."""
    if role_in(user, team.pk) != Membership.Role.OWNER:
        raise PermissionDenied(message)


def shared_object(token: str) -> ShareLink:
    """The active share link of ``token`` (its run or study selected); 404 for unknown, revoked or expired
    links alike, so a dead link says no more than a wrong one."""
    active = ShareLink.objects.filter(revoked_at__isnull=True).filter(
        Q(expires_at__isnull=True) | Q(expires_at__gt=timezone.now())
    )
    link = active.select_related("run", "study").filter(token=token).first()
    if link is None:
        raise Http404("No such link.")
    return link
