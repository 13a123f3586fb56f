"""Every write of the task layer: create, claim, renew, complete, fail, expire, cancel, retry.

One state machine for both runners. Races are settled in PostgreSQL: claims take rows
with FOR UPDATE SKIP LOCKED, and every holder's action is a conditional UPDATE whose row
count is checked (a completion for a lease that expired a moment ago changes nothing and
gets a 409 that says so). A partial unique index allows one running attempt per task.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import timedelta

import structlog
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from apps.core.errors import ApplicationError, Conflict, NotFound
from apps.workflows import breaker, events, routing
from apps.workflows.breaker import LATEST_SQL
from apps.workflows.choices import ACTIVE_STATES, FINAL_STATES, AttemptOutcome, ErrorType, Runner, TaskState
from apps.workflows.models import Task, TaskAttempt
from apps.workflows.skills import skill_get

log = structlog.get_logger(__name__)

MAX_CLAIM = 50
# Error types a retry cannot fix: the task is failed at once.
NOT_RETRYABLE = {ErrorType.REJECTED, ErrorType.SERIALIZATION}


# --- create ----------------------------------------------------------------------------------

def task_create(
    *, kind: str, payload: dict | None = None, required_capabilities: list[str] | None = None, priority: int = 0,
    resources: dict | None = None, model: str = "", queued_timeout_s: int | None = None,
    attempt_timeout_s: int = 300, overall_timeout_s: int | None = None, max_attempts: int = 3,
    backoff_base_s: float = 2.0, backoff_max_s: float = 300.0, idempotency_key: str | None = None,
    runner: str | None = None, created_by=None,
) -> tuple[Task, bool]:
    """Queue a task; returns (task, created). The same idempotency key returns the first task.

    A registered skill runs on Celery workers and its payload is checked against the
    skill's schema; any other kind is claimed by external agents. Routing (CPU or GPU)
    is decided here and recorded on the task with its reason.
    """
    payload = payload or {}
    if idempotency_key:
        existing = Task.objects.filter(idempotency_key=idempotency_key).first()
        if existing is not None:
            return existing, False
    skill = skill_get(kind)
    runner = runner or (Runner.CELERY if skill else Runner.AGENT)
    if runner == Runner.CELERY and skill is None:
        raise ApplicationError(f"No skill named {kind!r} is registered", code="unknown_skill", fields={"kind": ["Unknown skill."]})
    if skill is not None:
        problems = skill.check(payload)
        if problems:
            raise ApplicationError(f"The payload does not fit skill {kind}", code="invalid_payload",
                                   fields={f"payload.{k}": [v] for k, v in problems.items()})
    r = routing.route(kind=kind, payload=payload, model=model, resources=resources, skill=skill)
    if r.resource_class == "gpu" and r.vram_mb:
        largest = _largest_gpu_mb()
        if largest is not None and r.vram_mb > largest:
            raise ApplicationError(
                f"The task needs {r.vram_mb} MiB of GPU memory; the largest GPU in the fleet has {largest} MiB",
                code="impossible_resources", fields={"resources.vram_mb": ["More than any GPU has."]},
            )
    task = Task(
        kind=kind, payload=payload, required_capabilities=sorted(set(required_capabilities or [])), priority=priority,
        runner=runner, resource_class=r.resource_class, vram_mb=r.vram_mb, model=model, routing_score=r.score,
        routing_reason=r.reason, queued_timeout_s=queued_timeout_s, attempt_timeout_s=attempt_timeout_s,
        overall_timeout_s=overall_timeout_s, max_attempts=max_attempts, backoff_base_s=backoff_base_s,
        backoff_max_s=backoff_max_s, idempotency_key=idempotency_key or None, created_by=created_by,
    )
    try:
        with transaction.atomic():
            task.save()
            transaction.on_commit(_notify_queued if runner == Runner.AGENT else _dispatch_soon)
            events.tasks_changed([task.pk], added=True)
    except IntegrityError:
        # Two creates with one key raced: the other one won, and that is the task.
        existing = Task.objects.filter(idempotency_key=idempotency_key).first() if idempotency_key else None
        if existing is None:
            raise
        return existing, False
    log.info("task_created", task_id=task.pk, kind=kind, runner=runner, resource_class=r.resource_class,
             routing=r.reason)
    return task, True


def _largest_gpu_mb() -> int | None:
    """Memory of the largest GPU any registered agent has (None: no GPUs known yet)."""
    with connection.cursor() as cur:
        cur.execute(
            "SELECT max((g->>'memory_total_bytes')::bigint) FROM agents_agent, "
            "jsonb_array_elements(COALESCE(host->'gpus', '[]'::jsonb)) g"
        )
        value = cur.fetchone()[0]
    return int(value // 2**20) if value else None


def _notify_queued():
    with connection.cursor() as cur:
        cur.execute("NOTIFY pulseguard_tasks")


def _dispatch_soon():
    """Celery-run work is sent to its queue by the dispatcher; ask it to run now rather
    than at its next beat."""
    from apps.workflows.tasks import tasks_dispatch

    try:
        tasks_dispatch.delay()
    except Exception:  # the broker is down: beat dispatches it when it is back
        log.warning("dispatch_request_failed", exc_info=True)


def _requeued(task: Task) -> None:
    """Clear what placed the task last time; wake whoever runs it next."""
    task.dispatched_at = task.dispatch_token = None
    task.queue, task.gpu_node, task.gpu_index = "", "", None
    task.assigned_agent = None  # a retry may go to any agent; task_reassign sets one after
    transaction.on_commit(_notify_queued if task.runner == Runner.AGENT else _dispatch_soon)


_REQUEUE_FIELDS = ["dispatched_at", "dispatch_token", "queue", "gpu_node", "gpu_index", "assigned_agent"]


# --- claim (external agents) ----------------------------------------------------------------

_CLAIM_SQL = """
WITH me AS (
    -- The agent, if it may take work now: online, not draining, breaker not open
    -- (breaker.py); a half-open breaker lets one trial task through at a time.
    SELECT a.id, a.name, a.capabilities, a.readings, a.host, (b.n = %(breaker_n)s AND b.failures = b.n) AS tripped
    FROM agents_agent a LEFT JOIN LATERAL (""" + LATEST_SQL + """) b ON true
    WHERE a.id = %(agent)s AND a.status = 'online' AND a.state <> 'draining'
      AND NOT (b.n = %(breaker_n)s AND b.failures = b.n AND (
            b.last_end > %(now)s - make_interval(secs => %(breaker_cooldown)s)
            OR EXISTS (SELECT 1 FROM workflows_taskattempt x WHERE x.agent_id = a.id AND x.outcome = 'running')))
), devices AS (
    -- The agent's GPUs: free memory from its latest readings, minus what the GPU tasks
    -- it already holds there will use (the readings may predate them).
    SELECT (g->>'index')::int AS idx, COALESCE((g->>'utilization_percent')::float8, 0) AS util,
           COALESCE((g->>'memory_total_bytes')::bigint - COALESCE((g->>'memory_used_bytes')::bigint, 0), 0)
             - COALESCE((SELECT sum(x.vram_mb) FROM workflows_task x
                         WHERE x.agent_id = me.id AND x.state IN ('leased', 'running')
                           AND x.gpu_index = (g->>'index')::int), 0)::bigint * 1048576 AS free_bytes
    FROM me, jsonb_array_elements(COALESCE(me.readings->'gpus', me.host->'gpus', '[]'::jsonb)) g
), picked AS (
    SELECT t.id, (SELECT d.idx FROM devices d WHERE t.resource_class = 'gpu'
                    AND d.free_bytes >= COALESCE(t.vram_mb, 0)::bigint * 1048576
                  ORDER BY d.util, d.free_bytes DESC LIMIT 1) AS gpu_index
    FROM workflows_task t, me
    WHERE t.state = 'queued' AND t.runner = 'agent'
      AND (t.not_before IS NULL OR t.not_before <= %(now)s)
      AND t.required_capabilities <@ me.capabilities
      AND (t.assigned_agent_id IS NULL OR t.assigned_agent_id = me.id)
      AND (t.resource_class = 'cpu' OR EXISTS (
            SELECT 1 FROM devices d WHERE d.free_bytes >= COALESCE(t.vram_mb, 0)::bigint * 1048576))
    ORDER BY t.priority DESC, t.id
    LIMIT (SELECT CASE WHEN tripped THEN 1 ELSE %(limit)s END FROM me)
    FOR UPDATE OF t SKIP LOCKED
), leased AS (
    UPDATE workflows_task t SET
        state = 'leased', agent_id = %(agent)s, wait_reason = '',
        lease_expires_at = %(now)s + make_interval(secs => t.attempt_timeout_s),
        started_at = COALESCE(t.started_at, %(now)s),
        gpu_index = picked.gpu_index,
        gpu_node = CASE WHEN picked.gpu_index IS NULL THEN '' ELSE (SELECT name FROM me) END
    FROM picked WHERE t.id = picked.id
    RETURNING t.id, t.kind, t.payload, t.priority, t.lease_expires_at, t.attempt_timeout_s, t.resource_class, t.vram_mb
), attempts AS (
    INSERT INTO workflows_taskattempt (task_id, number, agent_id, started_at, outcome, error_type, error_message)
    SELECT leased.id, COALESCE((SELECT max(number) FROM workflows_taskattempt a WHERE a.task_id = leased.id), 0) + 1,
           %(agent)s, %(now)s, 'running', '', ''
    FROM leased
    RETURNING task_id, number
)
SELECT leased.*, attempts.number FROM leased JOIN attempts ON attempts.task_id = leased.id ORDER BY leased.priority DESC, leased.id
"""


@dataclass(frozen=True)
class Claimed:
    id: int
    kind: str
    payload: dict
    lease_expires_at: object
    attempt_timeout_s: int
    resource_class: str
    vram_mb: int | None
    attempt: int


def tasks_claim(*, agent, limit: int = 1) -> list[Claimed]:
    """Lease up to `limit` queued tasks this agent can run (capabilities, GPU memory).

    Nothing while dispatch is paused (controls.py), nor for an agent that is not
    online, is draining, is isolated or whose circuit
    breaker is open (one task at a time while it is half-open). Each claimed
    task gets a running attempt; the agent must renew the lease before it expires.
    """
    from apps.workflows.controls import dispatch_paused

    if dispatch_paused():  # maintenance mode: no new work for anyone
        return []
    limit = max(1, min(limit, MAX_CLAIM))
    with transaction.atomic(), connection.cursor() as cur:
        cur.execute(_CLAIM_SQL, {"agent": agent.pk, "now": timezone.now(), "limit": limit, **breaker.params()})
        rows = cur.fetchall()
        events.tasks_changed([r[0] for r in rows])
    claimed = [
        Claimed(id=r[0], kind=r[1], payload=_json(r[2]), lease_expires_at=r[4], attempt_timeout_s=r[5],
                resource_class=r[6], vram_mb=r[7], attempt=r[8])
        for r in rows
    ]
    if claimed:
        log.info("tasks_claimed", agent_id=str(agent.pk), task_ids=[c.id for c in claimed])
    return claimed


def _json(value):
    import json

    return json.loads(value) if isinstance(value, str) else value


# --- the holder's actions -------------------------------------------------------------------

def _holder_refusal(*, agent, task_id) -> ApplicationError:
    """Say precisely why a holder's action matched no row."""
    task = Task.objects.filter(pk=task_id).only("state", "agent_id", "lease_expires_at").first()
    if task is None:
        return NotFound(f"No task {task_id}", code="unknown_task")
    if task.state in FINAL_STATES:
        # The state lets a holder whose first completion's answer was lost see that it
        # did land (succeeded) rather than being cancelled under it.
        return Conflict(f"Task {task_id} is already {task.state}", code="already_finished",
                        fields={"state": task.state})
    if task.agent_id != agent.pk or task.state not in ACTIVE_STATES:
        return Conflict(f"Task {task_id} is not held by this agent", code="not_holder")
    return Conflict(f"The lease on task {task_id} expired; it has been or will be given to another agent",
                    code="lease_expired")


def tasks_renew(*, agent, task_ids: list[int]) -> dict:
    """Extend the leases this agent holds; returns {"renewed": [...], "lost": [...]}.

    A task that was cancelled, reassigned or whose lease ran out is in `lost`: the agent
    should stop working on it.
    """
    now = timezone.now()
    with connection.cursor() as cur:
        cur.execute(
            "UPDATE workflows_task SET state = 'running', lease_expires_at = %s + make_interval(secs => attempt_timeout_s) "
            "WHERE id = ANY(%s) AND agent_id = %s AND state IN ('leased', 'running') AND lease_expires_at > %s RETURNING id",
            [now, list(task_ids), agent.pk, now],
        )
        renewed = sorted(r[0] for r in cur.fetchall())
    return {"renewed": renewed, "lost": sorted(set(task_ids) - set(renewed))}


@transaction.atomic
def task_complete(*, agent, task_id: int, result: dict | None = None) -> Task:
    now = timezone.now()
    updated = Task.objects.filter(
        pk=task_id, agent=agent, state__in=ACTIVE_STATES, lease_expires_at__gt=now,
    ).update(state=TaskState.SUCCEEDED, result=result or {}, finished_at=now, lease_expires_at=None,
             error_type="", error_message="")
    if not updated:
        raise _holder_refusal(agent=agent, task_id=task_id)
    TaskAttempt.objects.filter(task_id=task_id, outcome=AttemptOutcome.RUNNING).update(
        outcome=AttemptOutcome.SUCCEEDED, ended_at=now)
    events.tasks_changed([task_id])
    log.info("task_succeeded", task_id=task_id, agent_id=str(agent.pk))
    return Task.objects.get(pk=task_id)


@transaction.atomic
def task_fail(*, agent, task_id: int, error_type: str = ErrorType.AGENT_ERROR, message: str = "",
              retryable: bool = True) -> Task:
    """The holder reports a failure: retried with backoff while the policy allows, else failed."""
    now = timezone.now()
    task = (Task.objects.select_for_update()
            .filter(pk=task_id, agent=agent, state__in=ACTIVE_STATES, lease_expires_at__gt=now).first())
    if task is None:
        raise _holder_refusal(agent=agent, task_id=task_id)
    _end_attempt(task, outcome=AttemptOutcome.FAILED, error_type=error_type, message=message, now=now)
    _retry_or_finish(task, error_type=error_type, message=message, retryable=retryable, now=now)
    return task


def _end_attempt(task: Task, *, outcome: str, error_type: str, message: str, now) -> None:
    TaskAttempt.objects.filter(task=task, outcome=AttemptOutcome.RUNNING).update(
        outcome=outcome, ended_at=now, error_type=error_type, error_message=message[:4000])


def backoff_s(task: Task, attempt: int) -> float:
    """Exponential backoff with 'equal jitter': half fixed, half random."""
    delay = min(task.backoff_max_s, task.backoff_base_s * 2 ** max(attempt - 1, 0))
    return delay / 2 + random.uniform(0, delay / 2)


def _retry_or_finish(task: Task, *, error_type: str, message: str, retryable: bool, now,
                     final_state: str = TaskState.FAILED) -> None:
    # Attempts that ended by an operator's hand (cancel, reassign) do not use up retries.
    attempts = TaskAttempt.objects.filter(task=task).exclude(outcome=AttemptOutcome.CANCELLED).count()
    past_deadline = task.overall_timeout_s is not None and now >= task.created_at + timedelta(seconds=task.overall_timeout_s)
    task.lease_expires_at = None
    task.error_type, task.error_message = error_type, message[:4000]
    if retryable and error_type not in NOT_RETRYABLE and attempts < task.max_attempts and not past_deadline:
        task.state = TaskState.QUEUED
        task.agent = None
        task.not_before = now + timedelta(seconds=backoff_s(task, attempts))
        task.wait_reason = f"retry {attempts + 1}/{task.max_attempts} after {error_type}"
        _requeued(task)
    else:
        task.state = TaskState.TIMED_OUT if past_deadline else final_state
        task.finished_at = now
    task.save(update_fields=["state", "agent", "lease_expires_at", "not_before", "wait_reason", "error_type",
                             "error_message", "finished_at", *_REQUEUE_FIELDS])
    events.tasks_changed([task.pk])
    log.info("task_attempt_failed", task_id=task.pk, error_type=error_type, next_state=task.state, attempts=attempts)


# --- expiry (beat) ------------------------------------------------------------------------

def tasks_expire(*, batch: int = 500) -> dict[str, int]:
    """Leases that ran out or whose holder went stale/isolated/offline go back to the queue
    (or fail, per policy); queued tasks past their queued timeout and tasks past their
    overall deadline time out. Each task is handled in its own short transaction."""
    now = timezone.now()
    counts = {"lease_lost": 0, "queued_timeout": 0, "deadline": 0, "redispatch": 0}
    lost = list(
        Task.objects.filter(state__in=ACTIVE_STATES)
        .filter(lease_expires_at__lte=now)
        .union(Task.objects.filter(state__in=ACTIVE_STATES, agent__status__in=["stale", "isolated", "offline"]))
        .values_list("pk", flat=True)[:batch]
    )
    for task_id in lost:
        with transaction.atomic():
            task = Task.objects.select_for_update(skip_locked=True).filter(pk=task_id, state__in=ACTIVE_STATES).first()
            if task is None:
                continue
            holder = task.agent
            if task.lease_expires_at > now and holder is not None and holder.status not in ("stale", "isolated", "offline"):
                continue  # renewed meanwhile
            reason = (f"holder {holder.name} is {holder.status}" if holder and holder.status in ("stale", "isolated", "offline")
                      else "lease expired without renewal")
            _end_attempt(task, outcome=AttemptOutcome.LEASE_LOST, error_type=ErrorType.LEASE_LOST, message=reason, now=now)
            _retry_or_finish(task, error_type=ErrorType.LEASE_LOST, message=reason, retryable=True, now=now)
            counts["lease_lost"] += 1
    with transaction.atomic(), connection.cursor() as cur:
        # Sent to a Celery queue but no worker started it within its attempt timeout
        # (no worker consumes that queue, or the message was lost): send it again.
        cur.execute(
            "UPDATE workflows_task SET dispatched_at = NULL, dispatch_token = NULL, "
            "wait_reason = 'no worker took it from ' || queue || '; dispatching again' "
            "WHERE state = 'queued' AND dispatched_at IS NOT NULL "
            "AND dispatched_at + make_interval(secs => attempt_timeout_s) <= %s",
            [now],
        )
        counts["redispatch"] = cur.rowcount
        cur.execute(
            "UPDATE workflows_task SET state = 'timed_out', finished_at = %s, error_type = 'timeout', "
            "error_message = 'waited in the queue longer than its queued timeout' "
            "WHERE state = 'queued' AND queued_timeout_s IS NOT NULL AND created_at + make_interval(secs => queued_timeout_s) <= %s "
            "RETURNING id",
            [now, now],
        )
        timed_out = [row[0] for row in cur.fetchall()]
        counts["queued_timeout"] = len(timed_out)
        cur.execute(
            "WITH t AS (UPDATE workflows_task SET state = 'timed_out', finished_at = %s, lease_expires_at = NULL, "
            "error_type = 'timeout', error_message = 'overall timeout reached' "
            "WHERE state IN ('queued', 'leased', 'running') AND overall_timeout_s IS NOT NULL "
            "AND created_at + make_interval(secs => overall_timeout_s) <= %s RETURNING id) "
            "UPDATE workflows_taskattempt a SET outcome = 'timed_out', ended_at = %s, error_type = 'timeout', "
            "error_message = 'overall timeout reached' FROM t WHERE a.task_id = t.id AND a.outcome = 'running'",
            [now, now, now],
        )
        cur.execute("SELECT id FROM workflows_task WHERE state = 'timed_out' AND finished_at = %s "
                    "AND error_message = 'overall timeout reached'", [now])
        past_deadline = [row[0] for row in cur.fetchall()]
        counts["deadline"] = len(past_deadline)
        events.tasks_changed(timed_out + past_deadline)
    if any(counts.values()):
        log.info("tasks_expired", **counts)
    return counts


# --- operators -------------------------------------------------------------------------------

@transaction.atomic
def task_cancel(*, task_id: int, actor=None) -> Task:
    task = Task.objects.select_for_update().filter(pk=task_id).first()
    if task is None:
        raise NotFound(f"No task {task_id}", code="unknown_task")
    if task.state in FINAL_STATES:
        raise Conflict(f"Task {task_id} is already {task.state}", code="already_finished")
    now = timezone.now()
    _end_attempt(task, outcome=AttemptOutcome.CANCELLED, error_type=ErrorType.CANCELLED,
                 message=f"cancelled by {getattr(actor, 'username', 'system')}", now=now)
    task.state, task.finished_at, task.lease_expires_at = TaskState.CANCELLED, now, None
    task.save(update_fields=["state", "finished_at", "lease_expires_at"])
    events.tasks_changed([task_id])
    log.info("task_cancelled", task_id=task_id, actor=getattr(actor, "username", None))
    return task


@transaction.atomic
def task_retry(*, task_id: int, priority_boost: int = 0, actor=None) -> Task:
    """Put a failed, timed-out or cancelled task back in the queue (history is kept)."""
    task = Task.objects.select_for_update().filter(pk=task_id).first()
    if task is None:
        raise NotFound(f"No task {task_id}", code="unknown_task")
    if task.state not in (TaskState.FAILED, TaskState.TIMED_OUT, TaskState.CANCELLED):
        raise Conflict(f"Only failed, timed-out or cancelled tasks are retried; task {task_id} is {task.state}",
                       code="not_retryable")
    attempts = TaskAttempt.objects.filter(task=task).count()
    task.state, task.agent, task.not_before, task.finished_at = TaskState.QUEUED, None, None, None
    task.priority += priority_boost
    task.max_attempts = max(task.max_attempts, attempts + 1)  # one more try at least
    task.wait_reason = f"retried by {getattr(actor, 'username', 'system')}"
    _requeued(task)
    task.save(update_fields=["state", "agent", "not_before", "finished_at", "priority", "max_attempts", "wait_reason",
                             *_REQUEUE_FIELDS])
    events.tasks_changed([task_id])
    log.info("task_retried", task_id=task_id, boost=priority_boost, actor=getattr(actor, "username", None))
    return task


# --- reassign ----------------------------------------------------------------------------------

_PICK_SQL = """
SELECT a.id FROM agents_agent a
LEFT JOIN LATERAL (""" + LATEST_SQL + """) b ON true
WHERE a.kind = 'agent' AND a.status = 'online' AND a.state <> 'draining' AND a.id <> ALL(%(exclude)s::uuid[])
  AND %(caps)s::varchar[] <@ a.capabilities
  AND NOT (b.n = %(breaker_n)s AND b.failures = b.n)
ORDER BY (SELECT count(*) FROM workflows_task t WHERE t.agent_id = a.id AND t.state IN ('leased', 'running')),
         a.last_latency_ms NULLS LAST, a.name
LIMIT 1
"""


def agent_pick_for(task: Task, *, exclude=()) -> str | None:
    """The least-loaded healthy agent that can run `task` (online, not draining, has the
    capabilities, breaker closed), or None."""
    with connection.cursor() as cur:
        cur.execute(_PICK_SQL, {"exclude": [str(e) for e in exclude if e], "caps": task.required_capabilities,
                                **breaker.params()})
        row = cur.fetchone()
    return str(row[0]) if row else None


@transaction.atomic
def task_reassign(*, task_id: int, agent_id=None, actor=None) -> Task:
    """Move a task to another agent: `agent_id`, or the least-loaded healthy agent with
    the capabilities. A running attempt ends as cancelled (it says nothing about the
    agent); only the new agent may claim the task next."""
    from apps.agents.models import Agent

    task = Task.objects.select_for_update().filter(pk=task_id).first()
    if task is None:
        raise NotFound(f"No task {task_id}", code="unknown_task")
    if task.state in FINAL_STATES:
        raise Conflict(f"Task {task_id} is already {task.state}; retry it instead", code="already_finished")
    if task.runner != Runner.AGENT:
        raise ApplicationError("Celery tasks are placed by the dispatcher; cancel and retry to place it again",
                               code="not_reassignable")
    if agent_id is None:
        agent_id = agent_pick_for(task, exclude=[task.agent_id])
        if agent_id is None:
            raise Conflict("No other healthy agent with the capabilities "
                           f"{', '.join(task.required_capabilities) or '(none)'} is online", code="no_agent_available")
    target = Agent.objects.filter(pk=agent_id).first()
    if target is None:
        raise NotFound(f"No agent with id {agent_id}", code="unknown_agent")
    missing = set(task.required_capabilities) - set(target.capabilities)
    if missing:
        raise ApplicationError(f"{target.name} lacks {', '.join(sorted(missing))}", code="missing_capabilities",
                               fields={"agent": [f"Lacks {', '.join(sorted(missing))}."]})
    now = timezone.now()
    who = getattr(actor, "username", None) or "system"
    if task.state in ACTIVE_STATES:
        _end_attempt(task, outcome=AttemptOutcome.CANCELLED, error_type=ErrorType.CANCELLED,
                     message=f"reassigned to {target.name} by {who}", now=now)
    task.state, task.agent, task.lease_expires_at, task.not_before = TaskState.QUEUED, None, None, None
    _requeued(task)
    task.assigned_agent = target
    task.wait_reason = f"reassigned to {target.name} by {who}"
    task.save(update_fields=["state", "agent", "lease_expires_at", "not_before", "wait_reason", *_REQUEUE_FIELDS])
    events.tasks_changed([task_id])
    log.info("task_reassigned", task_id=task_id, to=target.name, actor=who)
    return task
