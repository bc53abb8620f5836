"""URLs of the new-run wizard, included at ``runs/new/`` (``jobs.urls``)."""

from django.urls import path

from jobs.wizard import balance, drawing, review, views

urlpatterns = [
    path("", views.start, name="wizard"),
    path("reset/", views.reset, name="wizard_reset"),
    path("fix/", review.fix, name="wizard_fix"),
    path("balance/", balance.balance, name="wizard_balance"),
    path("student/live/", drawing.student_live, name="wizard_student_live"),
    path("<slug:step>/", views.step, name="wizard_step"),
]
