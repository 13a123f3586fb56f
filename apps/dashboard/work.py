"""Reads the task, coordination and controls pages need beyond apps.workflows.selectors:
filters parsed from a query string, state counts, attempt counts for a page of rows, an
agent's recent work, and the hourly bars of the success-rate chart."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from uuid import UUID

from django.db.models import Count
from django.utils import timezone

from apps.agents.models import Agent
from apps.core.errors import ApplicationError
from apps.workflows.breaker import breaker_states
from apps.workflows.choices import FINAL_STATES, Runner, TaskState
from apps.workflows.models import Task, TaskAttempt

# The list's time filter: created within the last ...
SINCE = {"1h": ("1 h", timedelta(hours=1)), "24h": ("24 h", timedelta(hours=24)), "7d": ("7 d", timedelta(days=7)),
         "30d": ("30 d", timedelta(days=30))}
# The coordination page's windows (coordination.py accepts 15 minutes to 30 days).
WINDOWS = {"1h": ("1 h", timedelta(hours=1)), "6h": ("6 h", timedelta(hours=6)), "24h": ("24 h", timedelta(hours=24)),
           "7d": ("7 d", timedelta(days=7))}


def task_filters(params) -> dict:
    """The list's query string as task_list() keyword arguments; raises ApplicationError
    naming the bad parameter (the page then shows the error and an unfiltered list)."""
    out: dict = {}
    states = [s for s in params.getlist("state") if s]
    if states:
        bad = sorted(set(states) - set(TaskState.values))
        if bad:
            raise ApplicationError(f"Unknown state {', '.join(bad)}", fields={"state": ["Unknown state."]})
        out["state"] = states
    kind = params.get("kind", "").strip()[:100]
    if kind:
        out["kind"] = kind
    agent = params.get("agent", "").strip()
    if agent:
        try:
            out["agent_id"] = str(UUID(agent))
        except ValueError:
            raise ApplicationError("The agent filter is not an agent id", fields={"agent": ["Not an agent id."]}) from None
    runner = params.get("runner", "")
    if runner:
        if runner not in Runner.values:
            raise ApplicationError(f"Unknown runner {runner}", fields={"runner": ["Unknown runner."]})
        out["runner"] = runner
    since = params.get("since", "")
    if since:
        if since not in SINCE:
            raise ApplicationError(f"Unknown time filter {since}", fields={"since": ["Unknown time filter."]})
        out["since"] = timezone.now() - SINCE[since][1]
    return out


def task_state_counts() -> dict:
    """Tasks per state, all of them (what the counters above the list show, live)."""
    counts = dict(Task.objects.values_list("state").annotate(n=Count("id")).order_by())
    by_state = {state: counts.get(state, 0) for state in TaskState.values}
    return {"total": sum(by_state.values()), "by_state": by_state}


def task_rows(tasks) -> list[Task]:
    """A page of tasks with `attempt_count` on each (one query for the page)."""
    tasks = list(tasks)
    counts = dict(TaskAttempt.objects.filter(task_id__in=[t.pk for t in tasks]).values_list("task_id")
                  .annotate(n=Count("id")).order_by())
    for t in tasks:
        t.attempt_count = counts.get(t.pk, 0)
    return tasks


def task_rows_by_id(task_ids) -> list[Task]:
    return task_rows(Task.objects.select_related("agent").filter(pk__in=list(task_ids)).order_by("-id"))


def task_is_final(task: Task) -> bool:
    return task.state in FINAL_STATES


def agents_for_select(*, limit: int = 500) -> list[Agent]:
    return list(Agent.objects.only("id", "name", "status", "kind", "capabilities").order_by("name")[:limit])


def agent_recent_attempts(*, agent_id, limit: int = 10) -> list[TaskAttempt]:
    """The agent's latest attempts with their tasks: what it worked on, and how it ended."""
    return list(TaskAttempt.objects.filter(agent_id=agent_id).select_related("task")
                .only("number", "started_at", "ended_at", "outcome", "error_type", "error_message",
                      "task__id", "task__kind", "task__state")
                .order_by("-id")[:limit])


def agent_breaker(*, agent_id):
    return breaker_states(agent_ids=[agent_id]).get(str(agent_id))


@dataclass(frozen=True)
class Bar:
    hour: datetime
    finished: int
    succeeded: int
    rate: float | None

    @property
    def height(self) -> int:
        return 0 if self.rate is None else max(2, round(self.rate * 100))

    @property
    def tone(self) -> str:
        if self.rate is None:
            return "none"
        return "good" if self.rate >= 0.95 else "fair" if self.rate >= 0.8 else "poor"


def hourly_bars(hourly: list[dict], *, start: datetime, end: datetime) -> list[Bar]:
    """One bar per UTC hour of the window; hours without finished attempts are gaps."""
    by_hour = {h["hour"]: h for h in hourly}
    hour = start.replace(minute=0, second=0, microsecond=0)
    bars = []
    while hour < end:
        h = by_hour.get(hour)
        bars.append(Bar(hour, h["finished"], h["succeeded"], h["rate"]) if h else Bar(hour, 0, 0, None))
        hour += timedelta(hours=1)
    return bars
