"""The project's URLs plus the naive baseline heartbeat at /bench/naive/agents/<id>/heartbeat."""

from django.urls import path

from bench.naive import NaiveHeartbeatApi
from pulseguard.urls import handler404, urlpatterns as project_urlpatterns  # noqa: F401

urlpatterns = [
    path("bench/naive/agents/<uuid:agent_id>/heartbeat", NaiveHeartbeatApi.as_view(), name="bench-naive-heartbeat"),
    *project_urlpatterns,
]
