from django.urls import path

from apps.dashboard import views

app_name = "dashboard"

urlpatterns = [
    path("", views.fleet, name="fleet"),
    path("agents/<uuid:agent_id>/", views.agent_detail, name="agent_detail"),
    path("agents/<uuid:agent_id>/commands/<str:command>", views.agent_command, name="agent_command"),
    path("gpus/", views.gpus, name="gpus"),
    path("llm/", views.llm_usage, name="llm_usage"),
]
