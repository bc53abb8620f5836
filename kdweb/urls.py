from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from jobs.api import views as api
from jobs.pages import accounts

urlpatterns = [
    path("admin/", admin.site.urls),
    path("login/", accounts.Login.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("signup/", accounts.signup, name="signup"),
    # passwords: Django's views (their default URL names), kdweb's templates (frontend/templates/registration/)
    path("account/password/", auth_views.PasswordChangeView.as_view(), name="password_change"),
    path("account/password/done/", auth_views.PasswordChangeDoneView.as_view(), name="password_change_done"),
    path(
        "account/reset/",
        auth_views.PasswordResetView.as_view(
            email_template_name="registration/password_reset_email.txt",
            subject_template_name="registration/password_reset_subject.txt",
        ),
        name="password_reset",
    ),
    path("account/reset/sent/", auth_views.PasswordResetDoneView.as_view(), name="password_reset_done"),
    path("account/reset/<uidb64>/<token>/", accounts.PasswordResetConfirm.as_view(), name="password_reset_confirm"),
    path("account/reset/done/", auth_views.PasswordResetCompleteView.as_view(), name="password_reset_complete"),
    path("api/v1/", include("jobs.api.urls")),
    path("account/token/", api.token_page, name="api_token"),
    path("", include("jobs.pages.urls")),
]
handler404 = api.not_found
