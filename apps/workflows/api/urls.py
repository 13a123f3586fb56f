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
