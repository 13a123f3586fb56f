from django.urls import path

from apps.workflows.api import views

app_name = "workflows-api"

urlpatterns = [
    path("tasks", views.TaskListCreateApi.as_view(), name="task_list"),
    # The async long-poll view answers; the DRF view after it only documents the endpoint
    # (Django takes the first match, drf-spectacular reads DRF views).
    path("tasks/claim", views.task_claim, name="claim"),
    path("tasks/claim", views.TaskClaimApi.as_view(), name="claim_schema"),
    path("tasks/renew", views.TaskRenewApi.as_view(), name="renew"),
    path("tasks/<int:task_id>", views.TaskDetailApi.as_view(), name="task_detail"),
    path("tasks/<int:task_id>/complete", views.TaskCompleteApi.as_view(), name="complete"),
    path("tasks/<int:task_id>/fail", views.TaskFailApi.as_view(), name="fail"),
    path("tasks/<int:task_id>/cancel", views.TaskCancelApi.as_view(), name="cancel"),
    path("tasks/<int:task_id>/retry", views.TaskRetryApi.as_view(), name="retry"),
    path("tasks/<int:task_id>/reassign", views.TaskReassignApi.as_view(), name="reassign"),
]

# Coordination figures and emergency controls (apps/workflows/api/coordination.py, controls.py).
from apps.workflows.api import controls as control_views  # noqa: E402
from apps.workflows.api import coordination as coordination_views  # noqa: E402

urlpatterns += [
    path("coordination/success-rate", coordination_views.CoordinationSuccessRateApi.as_view(), name="success_rate"),
    path("coordination/failures", coordination_views.CoordinationFailuresApi.as_view(), name="failures"),
    path("coordination/diagnostics", coordination_views.CoordinationDiagnosticsApi.as_view(), name="diagnostics"),
    path("controls", control_views.ControlsStateApi.as_view(), name="controls"),
    path("controls/pause", control_views.ControlPauseApi.as_view(), name="control_pause"),
    path("controls/resume", control_views.ControlResumeApi.as_view(), name="control_resume"),
    path("controls/stop-all", control_views.ControlStopAllApi.as_view(), name="control_stop_all"),
    path("controls/clear-queue", control_views.ControlClearQueueApi.as_view(), name="control_clear_queue"),
    path("controls/restart-agents", control_views.ControlRestartAgentsApi.as_view(), name="control_restart_agents"),
    path("controls/auto-heal", control_views.ControlAutoHealApi.as_view(), name="control_auto_heal"),
]
