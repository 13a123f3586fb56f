from django.urls import path

from apps.workflows.api import views

app_name = "workflows-api"

urlpatterns = [
    path("tasks", views.TaskListCreateApi.as_view(), name="task_list"),
    path("tasks/claim", views.TaskClaimApi.as_view(), name="claim"),
    path("tasks/renew", views.TaskRenewApi.as_view(), name="renew"),
    path("tasks/<int:task_id>", views.TaskDetailApi.as_view(), name="task_detail"),
    path("tasks/<int:task_id>/complete", views.TaskCompleteApi.as_view(), name="complete"),
    path("tasks/<int:task_id>/fail", views.TaskFailApi.as_view(), name="fail"),
    path("tasks/<int:task_id>/cancel", views.TaskCancelApi.as_view(), name="cancel"),
    path("tasks/<int:task_id>/retry", views.TaskRetryApi.as_view(), name="retry"),
]
