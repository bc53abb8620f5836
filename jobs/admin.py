"""Django's admin, for staff users (``is_staff``): users (with their teams and roles), teams, invitations and
the objects of the workbench. A superuser creates the first staff user: ``manage.py createsuperuser``."""

from django.contrib import admin
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import UserAdmin

from jobs.models import (
    Artifact,
    DatasetSpec,
    Evaluation,
    Invitation,
    Membership,
    MetricPoint,
    Run,
    ShareLink,
    Study,
    Teacher,
    Team,
)


class MembershipInline(admin.TabularInline):
    """A team's members on its page, a user's teams on theirs."""

    model = Membership
    extra = 1


admin.site.site_header = admin.site.site_title = "kdweb administration"
admin.site.unregister(get_user_model())


@admin.register(get_user_model())
class KdwebUserAdmin(UserAdmin):
    inlines = [MembershipInline]
    list_display = ["username", "email", "is_active", "is_staff", "last_login", "date_joined"]


@admin.register(Invitation)
class InvitationAdmin(admin.ModelAdmin):
    list_display = ["email", "team", "role", "invited_by", "created_at", "accepted_by", "accepted_at"]
    list_filter = ["team", "role"]
    readonly_fields = ["token"]


@admin.register(Team)
class TeamAdmin(admin.ModelAdmin):
    inlines = [MembershipInline]


@admin.register(Run)
class RunAdmin(admin.ModelAdmin):
    list_display = ["name", "team", "kind", "status", "progress", "queue", "host", "created_at"]
    list_filter = ["status", "kind", "team"]


@admin.register(Teacher)
class TeacherAdmin(admin.ModelAdmin):
    list_display = ["name", "team", "source"]


@admin.register(DatasetSpec)
class DatasetSpecAdmin(admin.ModelAdmin):
    list_display = ["name", "team", "source"]


admin.site.register([Study, MetricPoint, Evaluation, Artifact, ShareLink])
