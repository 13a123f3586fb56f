"""Reads of the task layer."""

from datetime import timedelta

from django.db import connection
from django.db.models import QuerySet
from django.utils import timezone

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


def agent_work_stats(*, agent_ids, hours: int = 24) -> dict[str, tuple[int, int]]:
    """(finished, succeeded) attempts per agent over the last `hours` (cancelled ones do
    not count: an operator's decision says nothing about the agent)."""
    ids = [str(i) for i in agent_ids]
    if not ids:
        return {}
    with connection.cursor() as cur:
        cur.execute(
            "SELECT agent_id::text, count(*), count(*) FILTER (WHERE outcome = 'succeeded') FROM workflows_taskattempt "
            "WHERE agent_id = ANY(%s::uuid[]) AND ended_at >= %s AND outcome NOT IN ('running', 'cancelled') "
            "GROUP BY agent_id",
            [ids, timezone.now() - timedelta(hours=hours)],
        )
        return {row[0]: (row[1], row[2]) for row in cur.fetchall()}
