from django.urls import path

from apps.agents.api import views

app_name = "agents-api"

urlpatterns = [
    path("agents", views.AgentListApi.as_view(), name="agent_list"),
    path("agents/register", views.AgentRegisterApi.as_view(), name="register"),
    path("agents/<uuid:agent_id>", views.AgentDetailApi.as_view(), name="agent_detail"),
    path("agents/<uuid:agent_id>/events", views.AgentEventListApi.as_view(), name="agent_events"),
    path("agents/<uuid:agent_id>/heartbeat", views.AgentHeartbeatApi.as_view(), name="heartbeat"),
    path("agents/<uuid:agent_id>/goodbye", views.AgentGoodbyeApi.as_view(), name="goodbye"),
    path(
        "agents/<uuid:agent_id>/commands/<uuid:command_id>/ack",
        views.AgentCommandAckApi.as_view(),
        name="command_ack",
    ),
] + [
    path(f"agents/<uuid:agent_id>/{name}", view.as_view(), name=name) for name, view in views.COMMAND_VIEWS.items()
]
