"""How well the fleet coordinates, read from attempts: success rate (hourly, with a trend),
failure patterns with recommendations, and queue diagnostics. Rules in docs/coordination.md.

Every figure is a set-based aggregate over a time range of `TaskAttempt.ended_at` (or
over the few queued/active tasks), so the cost follows the rows in the window, never one
query per agent, kind or task.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.db import connection
from django.db.models import (
    BooleanField, Case, Count, Exists, ExpressionWrapper, F, Max, Min, OuterRef, Q, Value, When,
)
from django.db.models import Window as Over
from django.db.models.functions import Trunc
from django.utils import timezone

from apps.agents.choices import AgentStatus
from apps.agents.models import Agent
from apps.workflows.choices import ACTIVE_STATES, AttemptOutcome, ErrorType, TaskState
from apps.workflows.controls import fleet_control_get
from apps.workflows.models import Task, TaskAttempt
from apps.workflows.recommendations import recommendation_for

DEFAULT_WINDOW = timedelta(hours=24)
MIN_WINDOW = timedelta(minutes=15)
MAX_WINDOW = timedelta(days=30)

# The rate counts attempts that ran to an outcome of their own. Cancelled attempts were
# ended by a person (or stop-all) and say nothing about the fleet: counted, not rated.
RATED_OUTCOMES = (AttemptOutcome.SUCCEEDED, AttemptOutcome.FAILED, AttemptOutcome.TIMED_OUT, AttemptOutcome.LEASE_LOST)
FAILURE_OUTCOMES = (AttemptOutcome.FAILED, AttemptOutcome.TIMED_OUT, AttemptOutcome.LEASE_LOST)

# Trend: the rate of the later half of the window against the earlier half. A change is
# a trend when it is at least TREND_MIN_CHANGE_PP percentage points AND a two-proportion
# z-test puts it beyond chance (|z| >= TREND_Z, about 95 %); below TREND_MIN_ATTEMPTS
# finished attempts, or fewer than TREND_MIN_PER_HALF in a half, there is not enough data.
TREND_MIN_CHANGE_PP = 5.0
TREND_Z = 1.96
TREND_MIN_ATTEMPTS = 20
TREND_MIN_PER_HALF = 5

GONE = (AgentStatus.STALE, AgentStatus.ISOLATED, AgentStatus.OFFLINE)
QUEUES = [("agent", "cpu"), ("agent", "gpu"), ("celery", "cpu"), ("celery", "gpu")]
# An attempt's kind is its task's: a join. (Copied onto the attempt when it is created,
# this becomes "kind" and per-kind figures read the attempts alone, like the others.)
KIND_FIELD = "task__kind"
GROUP_FIELDS = {"fleet": None, "agent": "agent_id", "kind": KIND_FIELD}


@dataclass(frozen=True)
class Window:
    start: datetime
    end: datetime

    @property
    def mid(self) -> datetime:
        return self.start + (self.end - self.start) / 2

    def as_dict(self) -> dict:
        return {"from": self.start, "to": self.end, "seconds": int((self.end - self.start).total_seconds())}


def window_make(*, length: timedelta = DEFAULT_WINDOW, now: datetime | None = None) -> Window:
    end = now or timezone.now()
    return Window(start=end - length, end=end)


def _rate(succeeded: int, finished: int) -> float | None:
    return round(succeeded / finished, 4) if finished else None


def trend_of(*, earlier_finished: int, earlier_succeeded: int, recent_finished: int, recent_succeeded: int) -> dict:
    """improving / declining / stable / not_enough_data, with the numbers and the reason."""
    earlier, recent = _rate(earlier_succeeded, earlier_finished), _rate(recent_succeeded, recent_finished)
    out = {"earlier_rate": earlier, "recent_rate": recent, "change_pp": None, "z": None}
    n = earlier_finished + recent_finished
    if n < TREND_MIN_ATTEMPTS or min(earlier_finished, recent_finished) < TREND_MIN_PER_HALF:
        return {**out, "direction": "not_enough_data",
                "reason": f"{n} finished attempts ({earlier_finished} earlier, {recent_finished} recent); a trend needs "
                          f"{TREND_MIN_ATTEMPTS}, with {TREND_MIN_PER_HALF} in each half of the window"}
    change = (recent_succeeded / recent_finished - earlier_succeeded / earlier_finished) * 100
    pooled = (earlier_succeeded + recent_succeeded) / n
    se = math.sqrt(pooled * (1 - pooled) * (1 / earlier_finished + 1 / recent_finished)) * 100
    z = change / se if se else 0.0
    out.update(change_pp=round(change, 2), z=round(z, 2))
    if abs(change) < TREND_MIN_CHANGE_PP:
        return {**out, "direction": "stable", "reason": f"changed {change:+.1f} pp, under ±{TREND_MIN_CHANGE_PP:g} pp"}
    if abs(z) < TREND_Z:
        return {**out, "direction": "stable",
                "reason": f"changed {change:+.1f} pp, but on too few attempts to tell from chance (z {z:+.2f})"}
    direction = "improving" if change > 0 else "declining"
    return {**out, "direction": direction, "reason": f"changed {change:+.1f} pp between the halves of the window (z {z:+.2f})"}


def _attempts(*, window: Window, agent_id=None, kind: str | None = None):
    qs = TaskAttempt.objects.filter(ended_at__gte=window.start, ended_at__lt=window.end)
    if agent_id:
        qs = qs.filter(agent_id=agent_id)
    if kind:
        qs = qs.filter(**{KIND_FIELD: kind})
    return qs


def _in_keys(field: str, keys: list) -> Q:
    """`field IN keys`, where a None key (a deleted agent) is matched with IS NULL."""
    q = Q(**{f"{field}__in": [k for k in keys if k is not None]})
    return q | Q(**{f"{field}__isnull": True}) if None in keys else q


def _agent_names(ids) -> dict:
    ids = {i for i in ids if i is not None}
    return dict(Agent.objects.filter(pk__in=ids).values_list("pk", "name")) if ids else {}


# --- success rate ------------------------------------------------------------------------------

def _counts() -> dict:
    return {
        # Counting `outcome` (never null), not `id`: the covering index has no id, and the
        # scan stays index-only.
        "finished": Count("outcome", filter=Q(outcome__in=RATED_OUTCOMES)),
        "succeeded": Count("outcome", filter=Q(outcome=AttemptOutcome.SUCCEEDED)),
        "failed": Count("outcome", filter=Q(outcome__in=FAILURE_OUTCOMES)),
        "cancelled": Count("outcome", filter=Q(outcome=AttemptOutcome.CANCELLED)),
    }


def _buckets(qs, *, field: str | None, mid: datetime) -> list[dict]:
    """Counts per (group, UTC hour, half of the window): everything the rate, the trend and
    the hourly series need, in one pass over the window."""
    keys = [field] if field else []
    return list(
        qs.annotate(hour=Trunc("ended_at", "hour", tzinfo=UTC),
                    earlier=ExpressionWrapper(Q(ended_at__lt=mid), output_field=BooleanField()))
        .values(*keys, "hour", "earlier").annotate(**_counts()).order_by("hour")
    )


def _group(key, label: str, buckets: list[dict], totals: dict | None = None) -> dict:
    earlier = [b for b in buckets if b["earlier"]]
    t = totals or {name: sum(b[name] for b in buckets) for name in ("finished", "succeeded", "failed", "cancelled")}
    ef, es = sum(b["finished"] for b in earlier), sum(b["succeeded"] for b in earlier)
    hourly: dict = {}
    for b in buckets:  # the hour that holds the middle of the window comes in two halves
        h = hourly.setdefault(b["hour"], {"hour": b["hour"], "finished": 0, "succeeded": 0})
        h["finished"] += b["finished"]
        h["succeeded"] += b["succeeded"]
    return {
        "key": str(key) if key is not None else None, "label": label,
        "finished": t["finished"], "succeeded": t["succeeded"], "failed": t["failed"], "cancelled": t["cancelled"],
        "rate": _rate(t["succeeded"], t["finished"]),
        "trend": trend_of(earlier_finished=ef, earlier_succeeded=es, recent_finished=t["finished"] - ef,
                          recent_succeeded=t["succeeded"] - es),
        "hourly": [{**h, "rate": _rate(h["succeeded"], h["finished"])} for h in hourly.values() if h["finished"]],
    }


def success_rate(*, window: Window, agent_id=None, kind: str | None = None, group_by: str = "fleet",
                 limit: int = 20) -> dict:
    """Succeeded / finished attempts per fleet, agent or kind: totals, trend, hourly buckets (UTC).

    Groups are ordered by failures, then volume; `limit` caps them (`groups_total` says how
    many there were). Hours without finished attempts are left out of `hourly`.
    """
    field = GROUP_FIELDS[group_by]
    qs = _attempts(window=window, agent_id=agent_id, kind=kind)
    out = {"window": window.as_dict(), "group_by": group_by}
    if field is None:
        return {**out, "groups_total": 1, "groups": [_group(None, "fleet", _buckets(qs, field=None, mid=window.mid))]}

    # The top groups first (count(*) OVER () is taken before the LIMIT: how many in all),
    # then the hourly buckets of those groups only.
    rows = list(qs.values(field).annotate(**_counts(), groups_total=Over(Count("*")))
                .order_by("-failed", "-finished", field)[:limit])
    by_key: dict = {}
    for b in _buckets(qs.filter(_in_keys(field, [r[field] for r in rows])), field=field, mid=window.mid):
        by_key.setdefault(b[field], []).append(b)
    names = _agent_names(r[field] for r in rows) if group_by == "agent" else {}
    groups = [
        _group(r[field], names.get(r[field], "(deleted agent)") if group_by == "agent" else r[field],
               by_key.get(r[field], []), totals=r)
        for r in rows
    ]
    return {**out, "groups_total": rows[0]["groups_total"] if rows else 0, "groups": groups}


# --- failure patterns --------------------------------------------------------------------------

_KNOWN_TYPES = [t for t in ErrorType.values if t != ErrorType.UNKNOWN]
# An attempt's pattern: its error type, or `unknown` when it has none (or one we do not know).
_PATTERN = Case(When(error_type__in=_KNOWN_TYPES, then=F("error_type")), default=Value(ErrorType.UNKNOWN))

# The latest few failures of each pattern, one index probe per pattern (LATERAL ... LIMIT).
_EXAMPLES_SQL = """
SELECT p.pattern, x.task_id, x.number, x.agent_id, ag.name, t.kind, x.outcome, x.ended_at, x.error_message
FROM unnest(%(patterns)s::text[]) AS p(pattern)
CROSS JOIN LATERAL (
    SELECT a.task_id, a.number, a.agent_id, a.outcome, a.ended_at, a.error_message
    FROM workflows_taskattempt a {kind_join}
    WHERE a.outcome IN ('failed', 'timed_out', 'lease_lost')
      AND a.ended_at >= %(start)s AND a.ended_at < %(end)s {agent_filter}
      AND (a.error_type = p.pattern OR (p.pattern = 'unknown' AND a.error_type <> ALL(%(known)s)))
    ORDER BY a.ended_at DESC
    LIMIT %(per)s
) x
JOIN workflows_task t ON t.id = x.task_id
LEFT JOIN agents_agent ag ON ag.id = x.agent_id
ORDER BY p.pattern, x.ended_at DESC
"""


def _examples(*, window: Window, patterns: list[str], agent_id, kind, per: int) -> dict[str, list[dict]]:
    if not patterns or per <= 0:
        return {}
    sql = _EXAMPLES_SQL.format(
        kind_join="JOIN workflows_task k ON k.id = a.task_id AND k.kind = %(kind)s" if kind else "",
        agent_filter="AND a.agent_id = %(agent)s" if agent_id else "",
    )
    params = {"patterns": patterns, "start": window.start, "end": window.end, "known": _KNOWN_TYPES, "per": per,
              "kind": kind, "agent": agent_id}
    out: dict[str, list[dict]] = {}
    with connection.cursor() as cur:
        cur.execute(sql, params)
        for pattern, task_id, number, agent, name, task_kind, outcome, ended_at, message in cur.fetchall():
            out.setdefault(pattern, []).append({
                "task_id": task_id, "attempt": number, "agent": str(agent) if agent else None, "agent_name": name,
                "kind": task_kind, "outcome": outcome, "ended_at": ended_at, "message": message[:500],
            })
    return out


def failure_patterns(*, window: Window, agent_id=None, kind: str | None = None, top: int = 3,
                     examples: int = 3) -> dict:
    """Failed, timed-out and lease-lost attempts grouped by error type: count, share, who and
    what they hit most, a few recent examples, and what to do about each."""
    qs = _attempts(window=window, agent_id=agent_id, kind=kind)
    finished = qs.filter(outcome__in=RATED_OUTCOMES).count()
    failures = qs.filter(outcome__in=FAILURE_OUTCOMES).annotate(pattern=_PATTERN)
    by_agent = list(failures.values("pattern", "agent_id").annotate(
        n=Count("*"), first=Min("ended_at"), last=Max("ended_at")).order_by())
    by_kind = list(failures.values("pattern", KIND_FIELD).annotate(n=Count("*")).order_by())
    total = sum(r["n"] for r in by_agent)

    patterns: dict[str, dict] = {}
    for r in by_agent:
        p = patterns.setdefault(r["pattern"], {"count": 0, "agents": [], "kinds": [], "first": r["first"], "last": r["last"]})
        p["count"] += r["n"]
        p["first"], p["last"] = min(p["first"], r["first"]), max(p["last"], r["last"])
        p["agents"].append((r["n"], r["agent_id"]))
    for r in by_kind:
        patterns[r["pattern"]]["kinds"].append((r["n"], r[KIND_FIELD]))
    ordered = sorted(patterns.items(), key=lambda item: (-item[1]["count"], item[0]))

    top_agents = {name: sorted(p["agents"], key=lambda a: (-a[0], str(a[1])))[:top] for name, p in ordered}
    names = _agent_names(a for rows in top_agents.values() for _, a in rows)
    samples = _examples(window=window, patterns=[name for name, _ in ordered], agent_id=agent_id, kind=kind,
                        per=examples)
    out = []
    for name, p in ordered:
        agents = [{"agent": str(a) if a else None, "name": names.get(a, "(deleted agent)"), "count": n}
                  for n, a in top_agents[name]]
        kinds = [{"kind": k, "count": n} for n, k in sorted(p["kinds"], key=lambda x: (-x[0], x[1]))[:top]]
        affected_agents = sum(1 for _, a in p["agents"] if a is not None)
        out.append({
            "error_type": name, "label": ErrorType(name).label, "count": p["count"],
            "share": round(p["count"] / total, 4), "agents_affected": affected_agents,
            "kinds_affected": len(p["kinds"]), "first_seen": p["first"], "last_seen": p["last"],
            "top_agents": agents, "top_kinds": kinds, "examples": samples.get(name, []),
            "recommendation": recommendation_for(name, agents=agents, kinds=kinds, agents_affected=affected_agents),
        })
    return {"window": window.as_dict(), "finished": finished, "failures": total,
            "failure_rate": _rate(total, finished), "patterns": out}


# --- diagnostics ---------------------------------------------------------------------------------

def _queues(now) -> list[dict]:
    queued = Q(state=TaskState.QUEUED)
    waiting_out_backoff = queued & Q(not_before__gt=now)
    rows = {
        (r["runner"], r["resource_class"]): r
        for r in Task.objects.filter(state__in=[TaskState.QUEUED, *ACTIVE_STATES])
        .values("runner", "resource_class")
        .annotate(
            depth=Count("id", filter=queued), backing_off=Count("id", filter=waiting_out_backoff),
            dispatched=Count("id", filter=queued & Q(dispatched_at__isnull=False)),
            active=Count("id", filter=Q(state__in=ACTIVE_STATES)), oldest=Min("created_at", filter=queued),
            top_priority=Max("priority", filter=queued),
        ).order_by()
    }
    out = []
    for runner, resource in QUEUES + sorted(set(rows) - set(QUEUES)):
        r = rows.get((runner, resource), {})
        oldest = r.get("oldest")
        out.append({
            "queue": f"{runner}/{resource}", "runner": runner, "resource_class": resource,
            "depth": r.get("depth", 0),
            "ready": r.get("depth", 0) - r.get("backing_off", 0) - r.get("dispatched", 0),
            "backing_off": r.get("backing_off", 0), "dispatched": r.get("dispatched", 0), "active": r.get("active", 0),
            "oldest_age_s": round((now - oldest).total_seconds(), 1) if oldest else None,
            "top_priority": r.get("top_priority"),
        })
    return out


def _celery_queues() -> list[dict]:
    """Celery's own queues (cpu, gpu.<node>.<index>): tasks sent and not started, and running."""
    sent = Q(state=TaskState.QUEUED, dispatched_at__isnull=False)
    active = Q(state__in=ACTIVE_STATES)
    rows = (Task.objects.filter(runner="celery").filter(sent | active).exclude(queue="")
            .values("queue").annotate(waiting=Count("id", filter=sent), running=Count("id", filter=active))
            .order_by("queue"))
    return [{"queue": r["queue"], "waiting": r["waiting"], "running": r["running"]} for r in rows]


def _why_waiting(task, *, now, paused: bool) -> str:
    if paused:
        return "dispatch is paused"
    if task.not_before and task.not_before > now:
        return f"backing off until {task.not_before:%H:%M:%S} UTC" + (f" ({task.wait_reason})" if task.wait_reason else "")
    if task.wait_reason:
        return task.wait_reason
    if task.runner == "agent" and not task.capable:
        needs = ", ".join(task.required_capabilities) or "no capabilities"
        return f"no online agent has the capabilities it needs ({needs})"
    return "waiting for free capacity"


def _oldest_queued(*, now, paused: bool, limit: int = 5) -> list[dict]:
    capable = Agent.objects.filter(status=AgentStatus.ONLINE, capabilities__contains=OuterRef("required_capabilities"))
    tasks = (Task.objects.filter(state=TaskState.QUEUED).order_by("created_at", "id")
             .only("id", "kind", "runner", "resource_class", "priority", "created_at", "not_before", "wait_reason",
                   "required_capabilities", "vram_mb")
             .annotate(capable=Exists(capable))[:limit])
    return [{
        "task_id": t.pk, "kind": t.kind, "queue": f"{t.runner}/{t.resource_class}", "priority": t.priority,
        "created_at": t.created_at, "age_s": round((now - t.created_at).total_seconds(), 1),
        "wait_reason": t.wait_reason, "why": _why_waiting(t, now=now, paused=paused),
    } for t in tasks]


def _stuck(*, now, limit: int = 20) -> dict:
    """Held tasks whose lease ran out, or whose holder is stale, isolated or offline:
    tasks_expire (beat, or auto-heal) gives them back to the queue."""
    qs = Task.objects.filter(state__in=ACTIVE_STATES).filter(Q(lease_expires_at__lt=now) | Q(agent__status__in=GONE))
    rows = list(qs.select_related("agent").only("id", "kind", "state", "lease_expires_at", "agent__name", "agent__status")
                .order_by("lease_expires_at", "id")[:limit])
    count = len(rows) if len(rows) < limit else qs.count()
    return {"count": count, "tasks": [{
        "task_id": t.pk, "kind": t.kind, "state": t.state, "agent": str(t.agent_id), "agent_name": t.agent.name,
        "agent_status": t.agent.status, "lease_expires_at": t.lease_expires_at,
        "overdue_s": round(max(0.0, (now - t.lease_expires_at).total_seconds()), 1),
        "reason": f"holder is {t.agent.status}" if t.agent.status in GONE else "lease expired without renewal",
    } for t in rows]}


def _failing_agents(*, window: Window, limit: int = 10) -> list[dict]:
    """The agents with the most failed attempts in the window, their rate and main error type.

    The ranking reads failures only (a small partial index); the few agents it names are
    then counted in full, by error pattern, in one more query.
    """
    qs = _attempts(window=window).filter(agent__isnull=False)
    top = list(qs.filter(outcome__in=FAILURE_OUTCOMES).values("agent_id").annotate(failed=Count("*"))
               .order_by("-failed", "agent_id")[:limit])
    if not top:
        return []
    pattern = Case(When(outcome__in=FAILURE_OUTCOMES, then=_PATTERN), default=Value(""))
    detail: dict = {}
    for r in (qs.filter(agent_id__in=[t["agent_id"] for t in top], outcome__in=RATED_OUTCOMES)
              .annotate(pattern=pattern).values("agent_id", "agent__name", "agent__status", "pattern")
              .annotate(n=Count("*")).order_by("-n", "pattern")):
        d = detail.setdefault(r["agent_id"], {"name": r["agent__name"], "status": r["agent__status"], "finished": 0,
                                              "top_error_type": None})
        d["finished"] += r["n"]
        if r["pattern"] and d["top_error_type"] is None:
            d["top_error_type"] = r["pattern"]
    out = []
    for t in top:
        d = detail[t["agent_id"]]
        out.append({"agent": str(t["agent_id"]), "name": d["name"], "status": d["status"], "failed": t["failed"],
                    "finished": d["finished"], "rate": _rate(d["finished"] - t["failed"], d["finished"]),
                    "top_error_type": d["top_error_type"]})
    return sorted(out, key=lambda a: (-a["failed"], a["name"]))


def diagnostics(*, window: Window) -> dict:
    """Queue depth per queue, the oldest waiting tasks and why, stuck tasks, the agents with
    the most failures in the window, agent counts by status, and whether dispatch is paused."""
    now = window.end
    control = fleet_control_get()
    agents = dict(Agent.objects.values_list("status").annotate(n=Count("id")).order_by())
    return {
        "now": now, "window": window.as_dict(),
        "dispatch": {"paused": control.paused, "reason": control.reason, "changed_at": control.changed_at,
                     "changed_by": control.changed_by.get_username() if control.changed_by else None},
        "queues": _queues(now),
        "celery_queues": _celery_queues(),
        "oldest_queued": _oldest_queued(now=now, paused=control.paused),
        "stuck": _stuck(now=now),
        "failing_agents": _failing_agents(window=window),
        "agents": {status: agents.get(status, 0) for status in AgentStatus.values},
    }
