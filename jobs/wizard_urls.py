"""URLs of the new-run wizard, included at ``runs/new/`` (``jobs.urls``)."""

from django.urls import path

from jobs import wizard

urlpatterns = [
    path("", wizard.start, name="wizard"),
    path("reset/", wizard.reset, name="wizard_reset"),
    path("fix/", wizard.fix, name="wizard_fix"),
    path("student/live/", wizard.student_live, name="wizard_student_live"),
    path("<slug:step>/", wizard.step, name="wizard_step"),
]
