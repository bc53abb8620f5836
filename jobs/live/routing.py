"""Websocket routes (``kdweb.asgi`` mounts them behind the origin check and the session's user)."""

from django.urls import path

from jobs.live.consumers import PublicRunConsumer, RunConsumer, RunListConsumer

websocket_urlpatterns = [
    path("ws/runs/", RunListConsumer.as_asgi(), name="runs_ws"),
    path("ws/runs/<int:run_id>/", RunConsumer.as_asgi(), name="run_ws"),
    path("ws/public/<str:token>/", PublicRunConsumer.as_asgi(), name="public_ws"),
]
