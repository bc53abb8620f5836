"""Pages of teams and sharing: ``/teams/`` (my teams, create one), ``/teams/<id>/`` (members, roles, pending
invitations; owners manage), ``/invites/<token>/`` (join a team), and the endpoints of the "Share" panel
(``jobs/partials/share_links.html``) that the run page and the study page include.

As in ``jobs.pages.runs``: thin views, permissions from ``jobs.permissions`` (other teams answer 404, a refused
write 403), writes through ``jobs.services``; a refused service call comes back as a message.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_http_methods, require_POST

from jobs import selectors, services
from jobs.models import Invitation, Membership, Run, ShareLink, Study
from jobs.pages.accounts import SignupForm, add_service_errors, log_in
from jobs.permissions import get_writable, require_owner, team_for_user

SHARE_TARGETS: dict[str, type[Run] | type[Study]] = {"run": Run, "study": Study}
EXPIRY_CHOICES = [("", "never"), ("1h", "in 1 hour"), ("1d", "in 1 day"), ("7d", "in 7 days"), ("30d", "in 30 days")]
EXPIRY = {"1h": timedelta(hours=1), "1d": timedelta(days=1), "7d": timedelta(days=7), "30d": timedelta(days=30)}


class TeamCreateForm(forms.Form):
    name = forms.CharField(max_length=100)


class InviteForm(forms.Form):
    who = forms.CharField(label="Username or e-mail", max_length=254)
    role = forms.ChoiceField(choices=Membership.Role.choices, initial=Membership.Role.MEMBER)


class RoleForm(forms.Form):
    role = forms.ChoiceField(choices=Membership.Role.choices)


class ShareLinkForm(forms.Form):
    expires = forms.ChoiceField(choices=EXPIRY_CHOICES, required=False)
    allow_downloads = forms.BooleanField(required=False, label="Allow downloads of the exported model")


def _flash_errors(request: HttpRequest, exc: ValidationError) -> None:
    messages.error(request, " ".join(exc.messages))


# --- teams ----------------------------------------------------------------------------------------------------


@login_required
@require_http_methods(["GET", "POST"])
def teams(request: HttpRequest) -> HttpResponse:
    """The user's teams; any logged-in user may create one (and becomes its owner)."""
    form = TeamCreateForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            team = services.team_create(user=request.user, name=form.cleaned_data["name"])
        except ValidationError as exc:
            form.add_error("name", exc.message_dict.get("name", exc.messages))
        else:
            messages.success(request, f"Created team {team.name}: you are its owner.")
            return redirect("team_detail", team_id=team.pk)
    return render(request, "jobs/teams.html", {"teams": selectors.team_list(request.user), "form": form})


@login_required
@require_http_methods(["GET"])
def team_detail(request: HttpRequest, team_id: int) -> HttpResponse:
    team, role = team_for_user(request.user, team_id)
    is_owner = role == Membership.Role.OWNER
    context = {
        "team": team,
        "role": role,
        "is_owner": is_owner,
        "members": selectors.team_members(team),
        # pending invitations carry their links: owners only
        "invitations": selectors.invitations_pending(team) if is_owner else [],
        "invite_form": InviteForm(),
        "roles": Membership.Role.choices,
        "storage": selectors.team_storage(team),
        "caches": selectors.team_caches(team),
    }
    return render(request, "jobs/team_detail.html", context)


@login_required
@require_POST
def teacher_cache_delete(request: HttpRequest, team_id: int, key: str) -> HttpResponse:
    """The storage table's Delete button of a teacher-output cache: owners only (the service says)."""
    team, _role = team_for_user(request.user, team_id)
    try:
        services.teacher_cache_delete(user=request.user, team=team, key=key)
    except ValidationError as exc:
        _flash_errors(request, exc)
    else:
        messages.success(request, "Deleted the teacher-output cache: the next run that needs it builds it again.")
    return redirect("team_detail", team_id=team.pk)


@login_required
@require_POST
def team_invite(request: HttpRequest, team_id: int) -> HttpResponse:
    team, _role = team_for_user(request.user, team_id)
    require_owner(request.user, team)  # before reading the form: a refusal does not depend on it
    form = InviteForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Give a username or an e-mail address, and a role.")
        return redirect("team_detail", team_id=team.pk)
    site = f"{request.scheme}://{request.get_host()}"
    try:
        added = services.member_invite(user=request.user, team=team, **form.cleaned_data)
    except ValidationError as exc:
        _flash_errors(request, exc)
    else:
        if isinstance(added, Invitation):
            url = services.invitation_url(added, site)
            if services.invitation_send(added, site):
                messages.success(request, f"Invitation mailed to {added.email}; you can also pass on its link: {url}")
            else:
                messages.warning(
                    request,
                    f"The invitation is saved, but the mail to {added.email} could not be sent: "
                    f"pass on its link yourself: {url}",
                )
        else:
            messages.success(request, f"{added.user.get_username()} joined {team.name} as {added.role}.")
    return redirect("team_detail", team_id=team.pk)


@login_required
@require_POST
def member_change(request: HttpRequest, team_id: int, membership_id: int, action: str) -> HttpResponse:
    """Set a member's role (``action="role"``) or remove them (``"remove"``): owners only (the service says)."""
    team, _role = team_for_user(request.user, team_id)
    require_owner(request.user, team)
    membership = get_object_or_404(Membership.objects.select_related("user", "team"), team=team, pk=membership_id)
    name = membership.user.get_username()
    try:
        if action == "remove":
            services.member_remove(user=request.user, membership=membership)
            done = f"Removed {name} from {team.name}."
        else:
            form = RoleForm(request.POST)
            if not form.is_valid():
                raise ValidationError("Choose owner, member or viewer.")
            services.member_set_role(user=request.user, membership=membership, role=form.cleaned_data["role"])
            done = f"{name} is now {form.cleaned_data['role']}."
    except ValidationError as exc:
        _flash_errors(request, exc)
    else:
        messages.success(request, done)
    return redirect("team_detail", team_id=team.pk)


def _invitation_refused(request: HttpRequest, exc: ValidationError) -> HttpResponse:
    """Why a link does not open: 404 for a token that never was, 410 for a used or expired one."""
    status = 404 if exc.code == "unknown" else 410
    return render(request, "jobs/invitation.html", {"refused": exc.messages[0]}, status=status)


@require_http_methods(["GET", "POST"])
def invitation_accept(request: HttpRequest, token: str) -> HttpResponse:
    """The page an invitation's link opens: who invites to which team as what; logged in, a button to join;
    otherwise a form that makes the account and joins at once (or a link to log in first). Once, in time."""
    try:
        invitation = services.invitation_open(token)
    except ValidationError as exc:
        return _invitation_refused(request, exc)
    form = None
    if not request.user.is_authenticated:
        form = SignupForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            data = form.cleaned_data
            try:
                membership = services.invitation_signup(
                    token=token, username=data["username"], password=data["password1"]
                )
            except ValidationError as exc:
                if not hasattr(exc, "error_dict"):  # the link was used or expired meanwhile
                    return _invitation_refused(request, exc)
                add_service_errors(form, exc)
            else:
                log_in(request, membership.user)
                messages.success(
                    request,
                    f"Welcome, {membership.user.get_username()}: you joined "
                    f"{membership.team.name} as {membership.role}.",
                )
                return redirect("team_detail", team_id=membership.team_id)
    elif request.method == "POST":
        try:
            membership = services.invitation_accept(user=request.user, token=token)
        except ValidationError as exc:
            _flash_errors(request, exc)
            return redirect("teams")
        messages.success(request, f"You joined {membership.team.name} as {membership.role}.")
        return redirect("team_detail", team_id=membership.team_id)
    return render(request, "jobs/invitation.html", {"invitation": invitation, "form": form})


# --- share links ------------------------------------------------------------------------------------------------


def share_panel(target: Run | Study, can_write: bool) -> dict[str, Any]:
    """The context of ``jobs/partials/share_links.html`` for a run or a study (its page adds it to its own)."""
    kind = "run" if isinstance(target, Run) else "study"
    return {
        "share_target": target,
        "share_kind": kind,
        "can_share": can_write,
        "share_links": list(selectors.share_links_active(target)) if can_write else [],
        "share_form": ShareLinkForm(),
    }


def _target_page(target: Run | Study) -> str:
    if isinstance(target, Run):
        return reverse("run_detail", args=[target.pk])
    return reverse("study_detail", args=[target.pk])


def _share_answer(request: HttpRequest, target: Run | Study) -> HttpResponse:
    """The panel again for htmx (it swaps it in place), else back to the object's page."""
    if request.headers.get("HX-Request"):
        return render(request, "jobs/partials/share_links.html", share_panel(target, can_write=True))
    return redirect(_target_page(target))


@login_required
@require_POST
def share_link_create(request: HttpRequest, kind: str, pk: int) -> HttpResponse:
    if kind not in SHARE_TARGETS:
        raise Http404("Runs and studies can be shared.")
    target = get_writable(SHARE_TARGETS[kind], request.user, pk)
    form = ShareLinkForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Choose when the link expires.")
        return _share_answer(request, target)
    expiry = EXPIRY.get(form.cleaned_data["expires"])
    try:
        services.share_link_create(
            user=request.user,
            target=target,
            expires_at=timezone.now() + expiry if expiry else None,
            allow_downloads=form.cleaned_data["allow_downloads"],
        )
    except ValidationError as exc:
        _flash_errors(request, exc)
    return _share_answer(request, target)


@login_required
@require_POST
def share_link_revoke(request: HttpRequest, link_id: int) -> HttpResponse:
    link = get_writable(ShareLink.objects.select_related("run", "study"), request.user, link_id)
    services.share_link_revoke(user=request.user, link=link)
    return _share_answer(request, link.run or link.study)
