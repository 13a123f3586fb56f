"""Reads of the task layer."""

from django.db.models import QuerySet

from apps.core.errors import ApplicationError
from apps.workflows.choices import TaskState
from apps.workflows.models import Task, TaskAttempt


def task_list(*, state=None, kind=None, agent_id=None, runner=None, since=None, until=None) -> QuerySet[Task]:
    qs = Task.objects.select_related("agent").order_by("-id")
    if state:
        bad = set(state) - set(TaskState.values)
        if bad:
            raise ApplicationError(f"Unknown state {', '.join(sorted(bad))}", code="invalid_filter",
                                   fields={"state": [f"One of {', '.join(TaskState.values)}."]})
        qs = qs.filter(state__in=state)
    if kind:
        qs = qs.filter(kind=kind)
    if agent_id:
        qs = qs.filter(agent_id=agent_id)
    if runner:
        qs = qs.filter(runner=runner)
    if since:
        qs = qs.filter(created_at__gte=since)
    if until:
        qs = qs.filter(created_at__lt=until)
    return qs


def task_get(*, task_id) -> Task | None:
    return Task.objects.select_related("agent", "created_by").filter(pk=task_id).first()


def task_attempts(*, task_id) -> list[TaskAttempt]:
    return list(TaskAttempt.objects.filter(task_id=task_id).select_related("agent").order_by("number"))
