from django.contrib import admin

from jobs.models import Artifact, DatasetSpec, Evaluation, Membership, MetricPoint, Run, Study, Teacher, Team


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 1


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


admin.site.register([Study, MetricPoint, Evaluation, Artifact])
