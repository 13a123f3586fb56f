"""Every write and state change of the agents app.

The heartbeat and the silence check run for every agent, all the time, so each is one
SQL statement: the heartbeat authenticates, updates the row, flips a late/stale agent
back online, records the transition and hands out pending commands in a single round
trip, for a whole batch of agents at once; the silence check moves the whole fleet in
one set-based UPDATE.
"""

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

import psycopg
import structlog
from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import F
from django.utils import timezone
from psycopg.types.json import Jsonb

from apps.agents import events
from apps.agents.choices import AgentKind, AgentState, AgentStatus, CommandStatus, CommandType, EventKind
from apps.agents.models import Agent, AgentCommand, AgentEvent, EnrollmentKey
from apps.core.errors import ApplicationError, AuthenticationFailed, Conflict, NotFound, PermissionDenied
from apps.core.tokens import AGENT_PREFIX, ENROLLMENT_PREFIX, token_hash, token_hint, token_make
from apps.metrics import services as metrics_services

log = structlog.get_logger(__name__)

# Statuses a heartbeat brings back online. Isolated stays isolated until released.
_REVIVABLE = (AgentStatus.LATE, AgentStatus.STALE, AgentStatus.OFFLINE)


# --- enrollment keys -------------------------------------------------------------------

@transaction.atomic
def enrollment_key_create(
    *, name: str, max_uses: int | None = None, expires_in: timedelta | None = None, created_by=None
) -> tuple[EnrollmentKey, str]:
    """Mint an enrollment key; the raw key is returned once and only its hash is kept."""
    if max_uses is not None and max_uses < 1:
        raise ApplicationError("max_uses must be at least 1", code="invalid", fields={"max_uses": "must be ≥ 1"})
    raw = token_make(ENROLLMENT_PREFIX)
    key = EnrollmentKey.objects.create(
        name=name,
        key_hash=token_hash(raw),
        hint=token_hint(raw),
        max_uses=max_uses,
        expires_at=timezone.now() + expires_in if expires_in else None,
        created_by=created_by,
    )
    log.info("enrollment_key_created", key_id=key.pk, name=name, max_uses=max_uses)
    return key, raw


def enrollment_keys_revoke(*, keys) -> int:
    """Revoke keys (idempotent: already revoked ones keep their date); agents already
    registered keep working, since they hold their own tokens. Returns how many changed."""
    return EnrollmentKey.objects.filter(pk__in=[k.pk for k in keys], revoked_at__isnull=True).update(
        revoked_at=timezone.now()
    )


def _enrollment_key_use(*, raw: str) -> EnrollmentKey:
    """Check a key and count one use; the row lock makes the use limit exact under races."""
    key = EnrollmentKey.objects.select_for_update().filter(key_hash=token_hash(raw)).first()
    if key is None:
        raise AuthenticationFailed("Unknown enrollment key", code="invalid_enrollment_key")
    if key.revoked_at is not None:
        raise AuthenticationFailed("This enrollment key was revoked", code="enrollment_key_revoked")
    if key.expires_at is not None and key.expires_at <= timezone.now():
        raise AuthenticationFailed("This enrollment key has expired", code="enrollment_key_expired")
    if key.max_uses is not None and key.uses >= key.max_uses:
        raise AuthenticationFailed(
            f"This enrollment key has been used {key.uses} of {key.max_uses} times", code="enrollment_key_used_up"
        )
    EnrollmentKey.objects.filter(pk=key.pk).update(uses=F("uses") + 1)
    return key


# --- registration ----------------------------------------------------------------------

@transaction.atomic
def agent_register(*, enrollment_key: str, **fields) -> tuple[Agent, str]:
    """Register an agent with an enrollment key (or take over its name with replace=True).

    The token is returned once; only its hash is kept. Replacing keeps the agent's id and
    history and invalidates the previous token. A refused registration spends no key use.
    """
    key = _enrollment_key_use(raw=enrollment_key)
    return _agent_enroll(key=key, **fields)


@transaction.atomic
def agent_register_worker(*, name: str, host: dict, capabilities: list[str], version: str = "") -> tuple[Agent, str]:
    """A Celery worker of this deployment joins the fleet (trusted, in-process: no key).

    A restarted worker takes its row back, keeping its id and history.
    """
    return _agent_enroll(
        key=None, name=name, kind=AgentKind.WORKER, capabilities=capabilities, labels={"runtime": "celery"},
        version=version, host=host, replace=True,
    )


def _agent_enroll(
    *,
    key: EnrollmentKey | None,
    name: str,
    kind: str,
    capabilities: list[str],
    labels: dict,
    version: str,
    host: dict,
    model: str = "",
    provider: str = "",
    replace: bool = False,
) -> tuple[Agent, str]:
    now = timezone.now()
    raw_token = token_make(AGENT_PREFIX)
    fields = dict(
        kind=kind,
        capabilities=capabilities,
        labels=labels,
        version=version,
        host=host,
        model=model,
        provider=provider,
        token_hash=token_hash(raw_token),
        enrollment_key=key,
        status=AgentStatus.ONLINE,
        state=AgentState.IDLE,
        last_heartbeat_at=now,
        status_changed_at=now,
        readings={},
    )
    source = f"with key {key.name!r}" if key else "as a Celery worker"
    existing = Agent.objects.select_for_update().filter(name=name).first()
    if existing is not None and not replace:
        raise Conflict(
            f"An agent named {name!r} is already registered; register with replace=true to take it over",
            code="name_taken",
        )
    if existing is not None:
        previous = existing.status
        for attr, value in fields.items():
            setattr(existing, attr, value)
        existing.save()
        agent = existing
        AgentEvent.objects.create(
            agent=agent, kind=EventKind.REPLACED, from_status=previous, to_status=agent.status,
            message=f"Re-registered from {host.get('hostname') or 'unknown host'} {source}; previous token revoked",
            created_at=now,
        )
    else:
        try:
            with transaction.atomic():
                agent = Agent.objects.create(name=name, **fields)
        except IntegrityError:
            # Another registration took the name between our check and our insert.
            raise Conflict(f"An agent named {name!r} is already registered", code="name_taken") from None
        AgentEvent.objects.create(
            agent=agent, kind=EventKind.REGISTERED, to_status=agent.status,
            message=f"Registered from {host.get('hostname') or 'unknown host'} {source}",
            created_at=now,
        )
    events.agents_changed([agent.pk], added=existing is None)
    log.info("agent_registered", agent_id=str(agent.pk), name=name, kind=kind, replaced=existing is not None)
    return agent, raw_token


def agent_authenticate(*, raw_token: str) -> Agent:
    agent = Agent.objects.filter(token_hash=token_hash(raw_token)).first() if raw_token.startswith(AGENT_PREFIX) else None
    if agent is None:
        raise AuthenticationFailed("Unknown or replaced agent token", code="invalid_token")
    return agent


# --- heartbeat -------------------------------------------------------------------------

@dataclass(frozen=True)
class Heartbeat:
    """One agent's heartbeat, already validated (see api/serializers.HeartbeatInputSerializer)."""

    agent_id: uuid.UUID
    token: str
    state: str
    readings: dict | None = None
    latency_ms: float | None = None
    task_ids: list[int] | None = None  # leases the agent holds: renewed by the heartbeat


@dataclass(frozen=True)
class HeartbeatResult:
    commands: list[dict]
    heartbeat_interval_s: int
    status: str
    tasks: dict | None = None  # {"renewed": [...], "lost": [...]} when task_ids were sent

    def as_dict(self) -> dict:
        """The answer's JSON: `tasks` only when the heartbeat named tasks."""
        body = {"commands": self.commands, "heartbeat_interval_s": self.heartbeat_interval_s, "status": self.status}
        if self.tasks is not None:
            body["tasks"] = self.tasks
        return body


# Every heartbeat goes through this one statement, alone or with the others that arrived
# within the same few milliseconds (a group commit: apps/agents/api/fast.py). Tokens are
# checked inside it, so a replaced token can never touch a row; rows are locked in id
# order so concurrent batches cannot deadlock; each agent gets its own commands back; the
# readings become telemetry samples (apps.metrics) in the same statement.
_HEARTBEATS_SQL = """
WITH v AS (
    SELECT * FROM unnest(%(ids)s::uuid[], %(hashes)s::text[], %(states)s::text[], %(readings)s::jsonb[],
                         %(latencies)s::float8[]) AS v(id, token_hash, state, readings, latency_ms)
), prev AS (
    SELECT a.id, a.status, a.state FROM agents_agent a JOIN v ON v.id = a.id AND v.token_hash = a.token_hash
    ORDER BY a.id
    FOR UPDATE OF a
), upd AS (
    UPDATE agents_agent a SET
        last_heartbeat_at = %(now)s,
        state = v.state,
        readings = COALESCE(v.readings, a.readings),
        last_latency_ms = COALESCE(v.latency_ms, a.last_latency_ms),
        status = CASE WHEN prev.status = ANY(%(revivable)s) THEN 'online' ELSE prev.status END,
        status_changed_at = CASE WHEN prev.status = ANY(%(revivable)s) THEN %(now)s ELSE a.status_changed_at END
    FROM prev JOIN v ON v.id = prev.id
    WHERE a.id = prev.id
    RETURNING a.id, prev.status AS old_status, a.status AS new_status, prev.state AS old_state
), cmds AS (
    UPDATE agents_agentcommand c SET status = 'delivered', delivered_at = %(now)s
    WHERE c.agent_id IN (SELECT id FROM upd) AND c.status = 'pending'
    RETURNING c.agent_id, c.id, c.type, c.args, c.created_at
), logged AS (
    INSERT INTO agents_agentevent (agent_id, kind, from_status, to_status, message, created_at)
    SELECT id, 'status_changed', old_status, new_status, 'Heartbeat received', %(now)s
    FROM upd WHERE old_status IS DISTINCT FROM new_status
)""" + metrics_services.heartbeat_samples_sql() + """
SELECT upd.id, upd.old_status, upd.new_status, upd.old_state,
       (SELECT COALESCE(json_agg(json_build_object(
                    'id', cmds.id, 'type', cmds.type, 'args', cmds.args,
                    'issued_at', to_char(cmds.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'))
                ORDER BY cmds.created_at), '[]'::json) FROM cmds WHERE cmds.agent_id = upd.id)
FROM upd
"""


def agent_heartbeats_record(*, beats: list[Heartbeat]) -> list[HeartbeatResult | ApplicationError]:
    """Record many agents' heartbeats in one statement and one transaction.

    Returns, per heartbeat and in order, its result (status and the pending commands,
    each delivered exactly once) or the ApplicationError that says why it was refused.
    An agent may appear only once per call. Live updates go out once for the batch.
    """
    if len({b.agent_id for b in beats}) != len(beats):
        raise ValueError("an agent may appear only once per batch")
    now = timezone.now()
    try:
        rows = _heartbeats_write(beats, now)
    except psycopg.errors.CheckViolation as exc:
        # No partition for today's samples: the beat job that makes them ahead has not
        # run for days. Make them rather than refuse heartbeats over telemetry.
        if "partition" not in str(exc):
            raise
        metrics_services.metrics_partitions_maintain()
        rows = _heartbeats_write(beats, now)
    renewed = _leases_renew(beats=[b for b in beats if b.task_ids and b.agent_id in rows], now=now)
    interval = settings.PULSEGUARD_HEARTBEAT_INTERVAL
    results: list[HeartbeatResult | ApplicationError] = []
    for beat in beats:
        row = rows.get(beat.agent_id)
        if row is None:
            results.append(_heartbeat_refusal(agent_id=beat.agent_id, token=beat.token))
            continue
        tasks = None
        if beat.task_ids is not None:
            mine = renewed.get(beat.agent_id, set())
            tasks = {"renewed": sorted(mine), "lost": sorted(set(beat.task_ids) - mine)}
        results.append(HeartbeatResult(commands=row[3], heartbeat_interval_s=interval, status=row[1], tasks=tasks))
    return results


_LEASES_SQL = """
UPDATE workflows_task t SET state = 'running', lease_expires_at = %(now)s + make_interval(secs => t.attempt_timeout_s)
FROM unnest(%(agents)s::uuid[], %(tasks)s::bigint[]) AS v(agent_id, task_id)
WHERE t.id = v.task_id AND t.agent_id = v.agent_id AND t.state IN ('leased', 'running') AND t.lease_expires_at > %(now)s
RETURNING t.agent_id, t.id
"""


def _leases_renew(*, beats: list[Heartbeat], now) -> dict:
    """Renew the leases heartbeats name, all in one statement; {agent_id: {task ids renewed}}."""
    pairs = [(b.agent_id, task_id) for b in beats for task_id in b.task_ids]
    if not pairs:
        return {}
    with connection.cursor() as cur:
        cur.execute(_LEASES_SQL, {"agents": [p[0] for p in pairs], "tasks": [p[1] for p in pairs], "now": now})
        renewed: dict = {}
        for agent_id, task_id in cur.fetchall():
            renewed.setdefault(agent_id, set()).add(task_id)
    return renewed


def _heartbeats_write(beats: list[Heartbeat], now) -> dict:
    with transaction.atomic():
        connection.ensure_connection()
        # psycopg's own cursor: server-side binding, and prepare=True lets PostgreSQL
        # plan this statement once per connection instead of once per call.
        with psycopg.Cursor(connection.connection) as cursor:
            cursor.execute(
                _HEARTBEATS_SQL,
                {
                    "ids": [b.agent_id for b in beats],
                    "hashes": [token_hash(b.token) for b in beats],
                    "states": [b.state for b in beats],
                    "readings": [Jsonb(b.readings) if b.readings is not None else None for b in beats],
                    "latencies": [b.latency_ms for b in beats],
                    "now": now,
                    "revivable": list(_REVIVABLE),
                },
                prepare=True,
            )
            rows = {row[0]: row[1:] for row in cursor.fetchall()}
        # New readings count as a change too: meters and charts follow them live (one
        # message for the whole batch; each socket coalesces what it renders).
        changed = [
            b.agent_id for b in beats
            if b.agent_id in rows and (
                rows[b.agent_id][0] != rows[b.agent_id][1] or rows[b.agent_id][2] != b.state
                or rows[b.agent_id][3] or b.readings
            )
        ]
        events.agents_changed(changed)
    return rows


def agent_heartbeat_record(
    *, agent_id, token: str, state: str, readings: dict | None = None, latency_ms: float | None = None,
    task_ids: list[int] | None = None,
) -> HeartbeatResult:
    """Record one heartbeat (a batch of one); raises the refusal if there is one."""
    beat = Heartbeat(agent_id=uuid.UUID(str(agent_id)), token=token, state=state, readings=readings,
                     latency_ms=latency_ms, task_ids=task_ids)
    (result,) = agent_heartbeats_record(beats=[beat])
    if isinstance(result, ApplicationError):
        raise result
    return result


def _heartbeat_refusal(*, agent_id, token: str) -> ApplicationError:
    """Say precisely why a heartbeat matched no row (slow path: only for bad requests)."""
    owner = Agent.objects.filter(token_hash=token_hash(token)).values_list("id", flat=True).first()
    if owner is None:
        return AuthenticationFailed("Unknown or replaced agent token", code="invalid_token")
    if not Agent.objects.filter(pk=agent_id).exists():
        return NotFound(f"No agent with id {agent_id}", code="unknown_agent")
    return PermissionDenied("This token belongs to another agent", code="token_agent_mismatch")


@transaction.atomic
def agent_goodbye(*, agent: Agent) -> None:
    """The agent is shutting down on purpose: offline, not stale, and no alarm."""
    now = timezone.now()
    old = Agent.objects.select_for_update().values_list("status", flat=True).get(pk=agent.pk)
    if old in (AgentStatus.OFFLINE, AgentStatus.ISOLATED):
        return
    Agent.objects.filter(pk=agent.pk).update(status=AgentStatus.OFFLINE, status_changed_at=now, state="idle")
    AgentEvent.objects.create(
        agent=agent, kind=EventKind.GOODBYE, from_status=old, to_status=AgentStatus.OFFLINE,
        message="Agent shut down cleanly", created_at=now,
    )
    events.agents_changed([agent.pk])


# --- commands --------------------------------------------------------------------------

@transaction.atomic
def agent_command_issue(*, agent: Agent, type: str, args: dict | None = None, actor=None) -> AgentCommand:
    """Queue a command for the agent's next heartbeat.

    Isolate and release also change the agent's status at once: an isolated agent gets
    no work from this moment, whether or not it has heard the command yet. Issuing the
    same command while an identical one is still pending returns that one (idempotent).
    """
    agent = Agent.objects.select_for_update().get(pk=agent.pk)
    args = args or {}
    pending = AgentCommand.objects.filter(agent=agent, type=type, args=args, status=CommandStatus.PENDING).first()
    if pending is not None:
        return pending
    now = timezone.now()
    command = AgentCommand.objects.create(agent=agent, type=type, args=args, issued_by=actor)
    old_status = agent.status
    new_status = old_status
    if type == CommandType.ISOLATE:
        new_status = AgentStatus.ISOLATED
    elif type == CommandType.RELEASE and old_status == AgentStatus.ISOLATED:
        new_status = _status_from_silence(agent.last_heartbeat_at, now)
    if new_status != old_status:
        Agent.objects.filter(pk=agent.pk).update(status=new_status, status_changed_at=now)
    who = getattr(actor, "username", None) or "system"
    AgentEvent.objects.create(
        agent=agent, kind=EventKind.COMMAND_ISSUED, from_status=old_status, to_status=new_status,
        message=f"{type} requested by {who}", actor=actor, created_at=now,
    )
    events.agents_changed([agent.pk])
    log.info("agent_command_issued", agent_id=str(agent.pk), command=type, actor=who)
    return command


@transaction.atomic
def agent_command_ack(*, agent: Agent, command_id, ok: bool, message: str = "") -> AgentCommand:
    command = AgentCommand.objects.select_for_update().filter(pk=command_id, agent=agent).first()
    if command is None:
        raise NotFound(f"No command {command_id} for this agent", code="unknown_command")
    if command.status in (CommandStatus.DONE, CommandStatus.FAILED):
        raise Conflict(f"Command {command_id} was already acknowledged ({command.status})", code="already_acknowledged")
    now = timezone.now()
    command.status = CommandStatus.DONE if ok else CommandStatus.FAILED
    command.acked_at = now
    command.result = message[:1000]
    command.save(update_fields=["status", "acked_at", "result"])
    AgentEvent.objects.create(
        agent=agent, kind=EventKind.COMMAND_ACKED, from_status=agent.status, to_status=agent.status,
        message=f"{command.type} {'done' if ok else 'failed'}" + (f": {message[:200]}" if message else ""),
        created_at=now,
    )
    events.agents_changed([agent.pk])
    return command


# --- silence ---------------------------------------------------------------------------

def _silence_thresholds(now: datetime) -> tuple[datetime, datetime]:
    """(late_before, stale_before): late after two missed intervals, stale after STALE_AFTER."""
    return (
        now - timedelta(seconds=2 * settings.PULSEGUARD_HEARTBEAT_INTERVAL),
        now - timedelta(seconds=settings.PULSEGUARD_STALE_AFTER),
    )


def _status_from_silence(last_heartbeat_at: datetime | None, now: datetime) -> str:
    late_before, stale_before = _silence_thresholds(now)
    if last_heartbeat_at is None or last_heartbeat_at < stale_before:
        return AgentStatus.STALE
    if last_heartbeat_at < late_before:
        return AgentStatus.LATE
    return AgentStatus.ONLINE


_CHECK_SQL = """
WITH cand AS (
    SELECT id, status AS old_status, last_heartbeat_at,
           CASE WHEN last_heartbeat_at IS NULL OR last_heartbeat_at < %(stale_before)s
                THEN 'stale' ELSE 'late' END AS new_status
    FROM agents_agent
    WHERE status IN ('online', 'late')
      AND (last_heartbeat_at IS NULL OR last_heartbeat_at < %(late_before)s)
    FOR UPDATE SKIP LOCKED
), moved AS (
    UPDATE agents_agent a SET status = cand.new_status, status_changed_at = %(now)s
    FROM cand
    WHERE a.id = cand.id AND cand.old_status <> cand.new_status
    RETURNING a.id, cand.old_status, cand.new_status, cand.last_heartbeat_at
), logged AS (
    INSERT INTO agents_agentevent (agent_id, kind, from_status, to_status, message, created_at)
    SELECT id, 'status_changed', old_status, new_status,
           'No heartbeat for ' || COALESCE(floor(extract(epoch FROM %(now)s - last_heartbeat_at))::bigint::text || ' s', 'ever'),
           %(now)s
    FROM moved
)
SELECT id, old_status, new_status FROM moved
"""


@dataclass(frozen=True)
class Transition:
    agent_id: str
    from_status: str
    to_status: str


@transaction.atomic
def agents_check_heartbeats(*, now: datetime | None = None) -> list[Transition]:
    """Move silent agents online → late → stale in one set-based statement.

    Late: two heartbeat intervals missed. Stale: silent longer than STALE_AFTER. Rows a
    heartbeat holds right now are skipped (they are fresh); the next run sees the rest.
    Each transition is an AgentEvent and one live update for the whole batch.
    """
    now = now or timezone.now()
    late_before, stale_before = _silence_thresholds(now)
    with connection.cursor() as cursor:
        cursor.execute(_CHECK_SQL, {"now": now, "late_before": late_before, "stale_before": stale_before})
        transitions = [Transition(str(agent_id), old, new) for agent_id, old, new in cursor.fetchall()]
    if transitions:
        events.agents_changed([t.agent_id for t in transitions])
        log.info(
            "agents_status_moved",
            late=sum(t.to_status == AgentStatus.LATE for t in transitions),
            stale=sum(t.to_status == AgentStatus.STALE for t in transitions),
        )
    return transitions
