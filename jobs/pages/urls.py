"""Pages of the workbench. The new-run wizard lives in jobs.wizard (its own module and URLs)."""

from django.urls import include, path

from jobs.pages import manage, public, runs, studies, teams

urlpatterns = [
    path("", runs.runs, name="runs"),
    path("runs/new/", include("jobs.wizard.urls")),
    path("runs/<int:run_id>/", runs.run_detail, name="run_detail"),
    path("runs/<int:run_id>/cancel/", runs.run_action, {"action": "cancel"}, name="run_cancel"),
    path("runs/<int:run_id>/resume/", runs.run_action, {"action": "resume"}, name="run_resume"),
    path("runs/<int:run_id>/artifacts/<int:artifact_id>/", runs.artifact_download, name="artifact_download"),
    path("teachers/", runs.teachers, name="teachers"),
    path("teachers/<int:teacher_id>/", runs.teacher_detail, name="teacher_detail"),
    path("datasets/", runs.datasets, name="datasets"),
    path("datasets/<int:dataset_id>/", runs.dataset_detail, name="dataset_detail"),
    # rename, archive, delete (jobs/partials/manage.html)
    path("manage/<str:kind>/<int:pk>/<str:action>/", manage.manage, name="manage"),
    # teams and sharing
    path("teams/", teams.teams, name="teams"),
    path("teams/<int:team_id>/", teams.team_detail, name="team_detail"),
    path("teams/<int:team_id>/invite/", teams.team_invite, name="team_invite"),
    path("teams/<int:team_id>/caches/<str:key>/delete/", teams.teacher_cache_delete, name="teacher_cache_delete"),
    path(
        "teams/<int:team_id>/members/<int:membership_id>/role/",
        teams.member_change,
        {"action": "role"},
        name="member_role",
    ),
    path(
        "teams/<int:team_id>/members/<int:membership_id>/remove/",
        teams.member_change,
        {"action": "remove"},
        name="member_remove",
    ),
    path("invites/<str:token>/", teams.invitation_accept, name="invitation_accept"),
    path("share/<str:kind>/<int:pk>/", teams.share_link_create, name="share_link_create"),
    path("share/links/<int:link_id>/revoke/", teams.share_link_revoke, name="share_link_revoke"),
    # public, read-only, no login: a share link's token is the only key
    path("p/<str:token>/", public.public_page, name="public_page"),
    path("p/<str:token>/artifacts/<int:artifact_id>/", public.public_artifact, name="public_artifact"),
    path("studies/", studies.study_list, name="studies"),
    path("studies/<int:study_id>/", studies.study_detail, name="study_detail"),
    path("studies/<int:study_id>/scorecard.csv", studies.study_scorecard_csv, name="study_scorecard_csv"),
    path("studies/<int:study_id>/measure/", studies.study_measure, name="study_measure"),
    path("compare/", studies.compare, name="compare"),
    path("compare/scorecard.csv", studies.compare_csv, name="compare_csv"),
    path("compare/measure/", studies.compare_measure, name="compare_measure"),
]
