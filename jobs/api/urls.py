"""URLs of the REST API, mounted at ``/api/v1/``: the viewsets, the OpenAPI schema and its Swagger UI."""

from django.urls import path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView
from rest_framework.routers import SimpleRouter

from jobs.api import views

router = SimpleRouter()
router.register("teams", views.TeamViewSet, basename="api-team")
router.register("teachers", views.TeacherViewSet, basename="api-teacher")
router.register("datasets", views.DatasetViewSet, basename="api-dataset")
router.register("runs", views.RunViewSet, basename="api-run")
router.register("studies", views.StudyViewSet, basename="api-study")

urlpatterns = [
    path("schema/", SpectacularAPIView.as_view(), name="api-schema"),
    # Swagger UI's files come from drf-spectacular-sidecar (static files), never from a CDN
    # the split view serves its start-up script as a file (?script): the pages allow no inline script (CSP)
    path("docs/", SpectacularSwaggerSplitView.as_view(url_name="api-schema"), name="api-docs"),
    *router.urls,
]
