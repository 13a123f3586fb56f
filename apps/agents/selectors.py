"""Reads shared by the API, the dashboard and the live consumers."""

from dataclasses import dataclass

from django.db.models import Count, Q, QuerySet
from django.utils import timezone

from apps.agents.choices import AgentStatus
from apps.agents.filters import AgentFilter
from apps.agents.health import health_score
from apps.agents.models import Agent, AgentCommand, AgentEvent
from apps.core.errors import ApplicationError

# What a fleet row shows; the token hash and enrollment key never leave the database.
_ROW_FIELDS = (
    "id", "name", "kind", "status", "state", "capabilities", "labels", "version", "host", "model",
    "provider", "readings", "last_heartbeat_at", "last_latency_ms", "status_changed_at", "registered_at",
)


def agent_list(*, filters=None) -> QuerySet[Agent]:
    """Agents filtered by status, kind, label (`key=value` or `key`), capability or search term.

    Bad filter values raise ApplicationError (a 400 in the API), never an empty list.
    """
    qs = Agent.objects.only(*_ROW_FIELDS).order_by("name")
    if not filters:
        return qs
    filterset = AgentFilter(data=filters, queryset=qs)
    if not filterset.is_valid():
        fields = {name: [str(e) for e in errs] for name, errs in filterset.errors.items()}
        raise ApplicationError("Invalid filter: " + ", ".join(sorted(fields)), code="invalid_filter", fields=fields)
    return filterset.qs


def agent_get(*, agent_id) -> Agent | None:
    return Agent.objects.only(*_ROW_FIELDS).filter(pk=agent_id).first()


def agent_rows(*, agent_ids) -> list[Agent]:
    return list(Agent.objects.only(*_ROW_FIELDS).filter(pk__in=list(agent_ids)).order_by("name"))


def agent_health(agent: Agent, *, now=None, work: tuple[int, int] = (0, 0)) -> int:
    return health_score(
        status=agent.status,
        last_heartbeat_at=agent.last_heartbeat_at,
        last_latency_ms=agent.last_latency_ms,
        now=now or timezone.now(),
        finished_attempts=work[0],
        succeeded_attempts=work[1],
    )


def agents_with_health(agents) -> list[Agent]:
    """Attach `health_score` (and `work`: finished, succeeded attempts in 24 h) to each
    agent, computed against one `now` with one query for the attempts."""
    from apps.workflows.selectors import agent_work_stats

    now = timezone.now()
    agents = list(agents)
    stats = agent_work_stats(agent_ids=[a.pk for a in agents]) if agents else {}
    for agent in agents:
        agent.work = stats.get(str(agent.pk), (0, 0))
        agent.health_score = agent_health(agent, now=now, work=agent.work)
    return agents


@dataclass(frozen=True)
class FleetCounts:
    total: int
    by_status: dict[str, int]


def fleet_counts() -> FleetCounts:
    row = Agent.objects.aggregate(
        total=Count("id"), **{s.value: Count("id", filter=Q(status=s.value)) for s in AgentStatus}
    )
    total = row.pop("total")
    return FleetCounts(total=total, by_status=row)


def agent_event_list(*, agent_id, limit: int = 50) -> list[AgentEvent]:
    return list(
        AgentEvent.objects.filter(agent_id=agent_id).select_related("actor").order_by("-created_at", "-id")[:limit]
    )


def agent_command_list(*, agent_id, limit: int = 20) -> list[AgentCommand]:
    return list(
        AgentCommand.objects.filter(agent_id=agent_id).select_related("issued_by").order_by("-created_at")[:limit]
    )
