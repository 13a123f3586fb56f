from django.urls import path

from apps.dashboard import coordination_views, task_views, views

app_name = "dashboard"

urlpatterns = [
    path("", views.fleet, name="fleet"),
    path("agents/<uuid:agent_id>/", views.agent_detail, name="agent_detail"),
    path("agents/<uuid:agent_id>/commands/<str:command>", views.agent_command, name="agent_command"),
    path("gpus/", views.gpus, name="gpus"),
    path("llm/", views.llm_usage, name="llm_usage"),
    path("tasks/", task_views.task_list, name="task_list"),
    path("tasks/new", task_views.task_create, name="task_create"),
    path("tasks/<int:task_id>/", task_views.task_detail, name="task_detail"),
    path("tasks/<int:task_id>/<str:action>", task_views.task_action, name="task_action"),
    path("coordination/", coordination_views.coordination_page, name="coordination"),
    path("controls/", coordination_views.controls_page, name="controls"),
    path("controls/<str:action>/", coordination_views.controls_page, name="control"),
]
