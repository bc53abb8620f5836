"""Pages of the workbench. The new-run wizard lives in jobs.wizard (its own module and URLs)."""

from django.urls import include, path

from jobs import views

urlpatterns = [
    path("", views.runs, name="runs"),
    path("runs/new/", include("jobs.wizard_urls")),
    path("runs/<int:run_id>/", views.run_detail, name="run_detail"),
    path("runs/<int:run_id>/cancel/", views.run_action, {"action": "cancel"}, name="run_cancel"),
    path("runs/<int:run_id>/resume/", views.run_action, {"action": "resume"}, name="run_resume"),
    path("runs/<int:run_id>/artifacts/<int:artifact_id>/", views.artifact_download, name="artifact_download"),
    path("teachers/", views.teachers, name="teachers"),
    path("datasets/", views.datasets, name="datasets"),
    path("datasets/<int:dataset_id>/", views.dataset_detail, name="dataset_detail"),
]
