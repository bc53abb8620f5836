from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from jobs.api import views as api

urlpatterns = [
    path("admin/", admin.site.urls),
    path("login/", auth_views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("api/v1/", include("jobs.api.urls")),
    path("account/token/", api.token_page, name="api_token"),
    path("", include("jobs.pages.urls")),
]
handler404 = api.not_found
