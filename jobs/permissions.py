"""The one place that decides who may see and change what. Pages, APIs and websockets all call it.

An object is visible to the members of its team (any role); changing it needs the owner or member role.
Objects of other teams answer 404, so their existence does not leak.
"""

from __future__ import annotations

from typing import TypeVar

from django.core.exceptions import PermissionDenied
from django.db.models import Model, QuerySet
from django.shortcuts import get_object_or_404

from jobs.models import Membership, Team

M = TypeVar("M", bound=Model)

READ_ONLY = "Viewers can look but not change anything in this team."


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


def require_write(user, team: Team) -> None:
    """Raise 403 unless the user is an owner or member of ``team``."""
    if not teams_for_user(user, write=True).filter(pk=team.pk).exists():
        raise PermissionDenied(READ_ONLY)
