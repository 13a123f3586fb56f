"""Emergency controls: pause and resume dispatch, stop all running tasks, clear the queue,
restart every agent, auto-heal. Documented in docs/coordination.md.

Each action is an operator's, idempotent (doing it twice changes nothing the second time
and says `affected: 0`), and writes one audit record with how many things it changed.
The API asks for `{"confirm": "<action>"}` before it calls any of these.

`dispatch_paused()` is what the claim and the Celery dispatcher ask before handing out
work. It reads one row at most once per process every PAUSE_CACHE_S seconds, so a pause
reaches every process within that time and costs nothing on the hot path.
"""

from __future__ import annotations

import json
import time
from contextlib import contextmanager
from dataclasses import dataclass, field

import structlog
from django.db import connection, transaction
from django.utils import timezone

from apps.agents.choices import AgentStatus, CommandStatus, CommandType
from apps.agents.models import Agent, AgentCommand
from apps.agents.services import agent_command_issue
from apps.security.models import FleetControl
from apps.security.services import audit_record
from apps.workflows import events, services
from apps.workflows.breaker import breakers_reset_all
from apps.workflows.choices import ACTIVE_STATES, TaskState
from apps.workflows.models import Task

log = structlog.get_logger(__name__)

PAUSE = "pause"
RESUME = "resume"
STOP_ALL = "stop-all"
CLEAR_QUEUE = "clear-queue"
RESTART_AGENTS = "restart-agents"
AUTO_HEAL = "auto-heal"
ACTIONS = {
    PAUSE: "Maintenance mode: no task is claimed or dispatched until resumed; running tasks go on.",
    RESUME: "Leave maintenance mode; agents waiting for work are woken at once.",
    STOP_ALL: "Cancel every leased or running task; their attempts end as cancelled.",
    CLEAR_QUEUE: "Cancel every queued task, including those waiting out a retry backoff.",
    RESTART_AGENTS: "Send a restart command to every online or late agent (delivered with its next heartbeat).",
    AUTO_HEAL: "Requeue lost work, apply due timeouts, reset open circuit breakers, restart stale agents.",
}

PAUSE_CACHE_S = 2.0
_clock = time.monotonic  # module-level so a test can step it
# Agents that are heard from and can act on a restart in their next heartbeat.
RESTARTABLE = (AgentStatus.ONLINE, AgentStatus.LATE)
_EXPIRE_BATCH = 500


@dataclass(frozen=True)
class ControlResult:
    action: str
    affected: int
    details: dict = field(default_factory=dict)
    audit_id: int | None = None


def _username(actor) -> str:
    return actor.get_username() if getattr(actor, "is_authenticated", False) else "system"


def _user(actor):
    return actor if getattr(actor, "is_authenticated", False) else None


# --- maintenance mode ------------------------------------------------------------------------

_paused_cache: tuple[float, bool] | None = None


def dispatch_paused() -> bool:
    """True while an operator has paused dispatch: claims return nothing, Celery starts nothing.

    Cached per process for at most PAUSE_CACHE_S seconds (monotonic clock), so callers on
    the claim path may ask on every call.
    """
    global _paused_cache
    now = _clock()
    cached = _paused_cache
    if cached is not None and now - cached[0] < PAUSE_CACHE_S:
        return cached[1]
    paused = FleetControl.objects.filter(pk=1, paused=True).exists()
    _paused_cache = (now, paused)
    return paused


def dispatch_paused_forget() -> None:
    """Drop this process's cached answer (after a flip, and between tests)."""
    global _paused_cache
    _paused_cache = None


def fleet_control_get() -> FleetControl:
    """The switch as it stands (an unsaved default row when nobody has ever touched it)."""
    return FleetControl.objects.select_related("changed_by").filter(pk=1).first() or FleetControl(pk=1)


def _flip(*, paused: bool, actor, reason: str) -> int:
    FleetControl.objects.get_or_create(pk=1)
    # Conditional UPDATE: of two concurrent pauses only one changes the row; the other
    # waits for it, re-reads `paused` and matches nothing.
    changed = FleetControl.objects.filter(pk=1, paused=not paused).update(
        paused=paused, reason=reason if paused else "", changed_by=_user(actor), changed_at=timezone.now(),
    )
    # Forget now (this transaction then reads its own write) and again after commit (a
    # read by another thread before the commit may have cached the old answer).
    dispatch_paused_forget()
    transaction.on_commit(dispatch_paused_forget)
    return changed


@transaction.atomic
def dispatch_pause(*, actor, reason: str = "") -> ControlResult:
    """Maintenance mode: no task is claimed or dispatched until resumed. Running tasks go on."""
    changed = _flip(paused=True, actor=actor, reason=reason)
    queued = Task.objects.filter(state=TaskState.QUEUED).count()
    details = {"already_paused": not changed, "queued_tasks": queued}
    return _audited(PAUSE, actor=actor, target="task dispatch", affected=changed, details=details, reason=reason)


@transaction.atomic
def dispatch_resume(*, actor, reason: str = "") -> ControlResult:
    """Leave maintenance mode; waiting agents are woken at once."""
    changed = _flip(paused=False, actor=actor, reason="")
    if changed:
        transaction.on_commit(_wake_claimers)
    return _audited(RESUME, actor=actor, target="task dispatch", affected=changed,
                    details={"already_running": not changed}, reason=reason)


def _wake_claimers() -> None:
    # The same channel task creation notifies: agents long-polling for work re-try now.
    with connection.cursor() as cur:
        cur.execute("NOTIFY pulseguard_tasks")


# --- stop, clear ---------------------------------------------------------------------------------

# The set-based form of services.task_cancel: the same end state (task cancelled, its
# running attempt ended as cancelled with error type `cancelled`) for every matching task
# in one statement. A holder completing at the same moment waits for the row, then finds
# it cancelled and gets a 409; a claim skips rows this UPDATE has locked.
_CANCEL_SQL = """
WITH t AS (
    UPDATE workflows_task SET state = 'cancelled', finished_at = %(now)s, lease_expires_at = NULL,
        not_before = NULL, wait_reason = ''
    WHERE state = ANY(%(states)s)
    RETURNING id, kind
), a AS (
    UPDATE workflows_taskattempt a SET outcome = 'cancelled', ended_at = %(now)s, error_type = 'cancelled',
        error_message = %(why)s
    FROM t WHERE a.task_id = t.id AND a.outcome = 'running'
    RETURNING a.id
)
SELECT (SELECT count(*) FROM t), (SELECT count(*) FROM a),
       (SELECT COALESCE(jsonb_object_agg(kind, n), '{}'::jsonb) FROM (SELECT kind, count(*) n FROM t GROUP BY kind) k),
       (SELECT COALESCE(array_agg(id ORDER BY id), '{}') FROM (SELECT id FROM t ORDER BY id LIMIT 100) s)
"""


def _cancel_where_state(*, states, why: str) -> dict:
    with connection.cursor() as cur:
        cur.execute(_CANCEL_SQL, {"now": timezone.now(), "why": why[:300], "states": [str(s) for s in states]})
        tasks, attempts, by_kind, sample = cur.fetchone()
    # Django's cursor hands jsonb back as text.
    by_kind = json.loads(by_kind) if isinstance(by_kind, str) else by_kind
    if tasks:
        # Open task lists re-read themselves (the sample holds at most 100 of the ids).
        events.tasks_changed(list(sample), added=True)
    return {"tasks": tasks, "attempts": attempts, "by_kind": by_kind, "task_ids": list(sample)}


@transaction.atomic
def tasks_stop_all(*, actor, reason: str = "") -> ControlResult:
    """Cancel every leased or running task; their attempts end as cancelled.

    Holders learn it at their next renew (the task is in `lost`) and their completion
    is refused. Queued work stays queued: pause first to stop the fleet taking more.
    """
    out = _cancel_where_state(states=ACTIVE_STATES, why=f"cancelled by {_username(actor)} (stop all)")
    return _audited(STOP_ALL, actor=actor, target="all leased and running tasks", affected=out["tasks"],
                    details=out, reason=reason)


@transaction.atomic
def queue_clear(*, actor, reason: str = "") -> ControlResult:
    """Cancel every queued task (including those waiting out a retry backoff)."""
    out = _cancel_where_state(states=[TaskState.QUEUED], why=f"cancelled by {_username(actor)} (queue cleared)")
    out.pop("attempts")  # a queued task has no running attempt
    return _audited(CLEAR_QUEUE, actor=actor, target="all queued tasks", affected=out["tasks"], details=out,
                    reason=reason)


# --- agents ------------------------------------------------------------------------------------

def _restart(*, statuses, actor, out: dict) -> None:
    """Issue a restart to every agent in `statuses` that has none pending yet; counts go
    into `out` as they happen.

    One short transaction per agent (agent_command_issue locks the agent row): a long
    one would hold up the heartbeats of the whole fleet.
    """
    agents = list(Agent.objects.filter(status__in=statuses).only("pk", "name").order_by("name"))
    pending = set(
        AgentCommand.objects.filter(type=CommandType.RESTART, status=CommandStatus.PENDING, args={},
                                    agent__status__in=statuses).values_list("agent_id", flat=True)
    )
    out.update(issued=0, already_pending=len(pending), agents=[])
    for agent in agents:
        if agent.pk in pending:
            continue
        try:
            agent_command_issue(agent=agent, type=CommandType.RESTART, actor=_user(actor))
        except Agent.DoesNotExist:
            continue  # deleted meanwhile
        out["issued"] += 1
        if len(out["agents"]) < 100:
            out["agents"].append(agent.name)


@contextmanager
def _audited_steps(action: str, *, actor, target: str, reason: str, affected):
    """For controls made of many short transactions: the audit record is written at the
    end, and also when a step fails half way, saying what was done before it failed.
    `affected(details)` counts what has been done so far."""
    details: dict = {}
    try:
        yield details
    except Exception as exc:
        with transaction.atomic():
            _audited(action, actor=actor, target=target, affected=affected(details),
                     details={**details, "error": f"{type(exc).__name__}: {exc}"[:300]}, reason=reason)
        raise


def _restarts_done(details: dict) -> int:
    return details.get("issued", 0)


def agents_restart_all(*, actor, reason: str = "") -> ControlResult:
    """Ask every online or late agent to restart (delivered with its next heartbeat)."""
    target = "agents online or late"
    with _audited_steps(RESTART_AGENTS, actor=actor, target=target, reason=reason, affected=_restarts_done) as details:
        _restart(statuses=RESTARTABLE, actor=actor, out=details)
    with transaction.atomic():
        return _audited(RESTART_AGENTS, actor=actor, target=target, affected=_restarts_done(details), details=details,
                        reason=reason)


def _healed(details: dict) -> int:
    return (sum(details.get("expired", {}).values()) + (details.get("breakers_reset") or 0)
            + details.get("stale_agents", {}).get("issued", 0))


def fleet_auto_heal(*, actor, reason: str = "") -> ControlResult:
    """Requeue lost work (expired leases, holders gone stale), apply due timeouts, reset open
    circuit breakers, and ask stale agents to restart when they are next heard from."""
    target = "lost work, open breakers, stale agents"
    with _audited_steps(AUTO_HEAL, actor=actor, target=target, reason=reason, affected=_healed) as details:
        expired = details["expired"] = {"lease_lost": 0, "queued_timeout": 0, "deadline": 0}
        for _ in range(20):  # up to 10,000 lost tasks per call; beat's tasks_expire keeps going after that
            counts = services.tasks_expire(batch=_EXPIRE_BATCH)
            for key in expired:
                expired[key] += counts.get(key, 0)
            if counts.get("lease_lost", 0) < _EXPIRE_BATCH:
                break
        details["breakers_reset"] = breakers_reset_all()
        _restart(statuses=[AgentStatus.STALE], actor=actor, out=details.setdefault("stale_agents", {}))
    with transaction.atomic():
        return _audited(AUTO_HEAL, actor=actor, target=target, affected=_healed(details), details=details,
                        reason=reason)


# --- audit -------------------------------------------------------------------------------------

def _audited(action: str, *, actor, target: str, affected: int, details: dict, reason: str = "") -> ControlResult:
    if reason:
        details = {**details, "reason": reason}
    record = audit_record(actor=actor, action=f"controls.{action}", target=target, affected=affected, details=details)
    log.warning("fleet_control", action=action, actor=_username(actor), affected=affected)
    return ControlResult(action=action, affected=affected, details=details, audit_id=record.pk)


def control_run(*, action: str, actor, reason: str = "") -> ControlResult:
    """Run one control by its name (the API's and the dashboard's single entry point)."""
    runners = {PAUSE: dispatch_pause, RESUME: dispatch_resume, STOP_ALL: tasks_stop_all, CLEAR_QUEUE: queue_clear,
               RESTART_AGENTS: agents_restart_all, AUTO_HEAL: fleet_auto_heal}
    if action not in runners:
        raise ValueError(f"unknown control {action!r}")
    return runners[action](actor=actor, reason=reason)
