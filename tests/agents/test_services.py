import uuid
from datetime import timedelta

from unittest import mock

import psycopg
import pytest
import time_machine
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from apps.agents import services
from apps.agents.choices import AgentStatus, CommandStatus, CommandType, EventKind
from apps.agents.models import Agent, AgentCommand, AgentEvent, EnrollmentKey
from apps.core.errors import ApplicationError, AuthenticationFailed, Conflict, NotFound, PermissionDenied
from apps.core.tokens import token_hash
from tests.conftest import register

pytestmark = pytest.mark.django_db


def _statements(queries) -> list[str]:
    """The work a service did, without the savepoints the test's own transaction adds."""
    return [q["sql"] for q in queries.captured_queries if "SAVEPOINT" not in q["sql"]]


def test_register_stores_only_the_token_hash_and_counts_the_key_use(enrollment_key):
    agent, token = register(enrollment_key, name="planner-01")

    agent.refresh_from_db()
    assert token.startswith("pga_")
    assert agent.token_hash == token_hash(token) != token
    assert not Agent.objects.filter(token_hash=token).exists()
    assert agent.status == AgentStatus.ONLINE
    assert EnrollmentKey.objects.get().uses == 1
    assert list(agent.events.values_list("kind", flat=True)) == [EventKind.REGISTERED]


def test_enrollment_key_is_stored_hashed(db):
    key, raw = services.enrollment_key_create(name="k", max_uses=3)
    assert key.key_hash == token_hash(raw)
    assert raw not in (key.hint, key.key_hash)


@pytest.mark.parametrize(
    "setup, code",
    [
        (lambda k: EnrollmentKey.objects.update(revoked_at=timezone.now()), "enrollment_key_revoked"),
        (lambda k: EnrollmentKey.objects.update(expires_at=timezone.now() - timedelta(seconds=1)), "enrollment_key_expired"),
        (lambda k: EnrollmentKey.objects.update(max_uses=1, uses=1), "enrollment_key_used_up"),
    ],
)
def test_it_refuses_a_dead_key_and_writes_nothing(enrollment_key, setup, code):
    setup(enrollment_key)
    uses_before = EnrollmentKey.objects.get().uses

    with pytest.raises(AuthenticationFailed) as err:
        register(enrollment_key)

    assert err.value.code == code
    assert Agent.objects.count() == 0
    assert EnrollmentKey.objects.get().uses == uses_before


def test_it_refuses_an_unknown_key(db):
    with pytest.raises(AuthenticationFailed) as err:
        register("pge_not-a-real-key")
    assert err.value.code == "invalid_enrollment_key"


def test_a_key_with_one_use_registers_exactly_one_agent(db):
    _, raw = services.enrollment_key_create(name="once", max_uses=1)
    register(raw, name="a")
    with pytest.raises(AuthenticationFailed):
        register(raw, name="b")
    assert list(Agent.objects.values_list("name", flat=True)) == ["a"]


def test_reregistering_a_name_is_a_conflict_that_does_not_spend_the_key(enrollment_key):
    register(enrollment_key, name="dup")
    with pytest.raises(Conflict) as err:
        register(enrollment_key, name="dup")
    assert err.value.code == "name_taken"
    assert EnrollmentKey.objects.get().uses == 1
    assert Agent.objects.count() == 1


def test_replace_keeps_the_id_and_history_and_kills_the_old_token(enrollment_key):
    agent, old_token = register(enrollment_key, name="dup")
    again, new_token = register(enrollment_key, name="dup", replace=True, version="2.0")

    assert again.pk == agent.pk
    assert Agent.objects.get().version == "2.0"
    assert [e.kind for e in AgentEvent.objects.order_by("created_at", "id")] == [EventKind.REGISTERED, EventKind.REPLACED]
    with pytest.raises(AuthenticationFailed):
        services.agent_heartbeat_record(agent_id=agent.pk, token=old_token, state="idle")
    services.agent_heartbeat_record(agent_id=agent.pk, token=new_token, state="idle")


def test_heartbeat_updates_the_row_in_one_statement(agent_and_token):
    agent, token = agent_and_token
    readings = {"cpu_percent": 37.5, "memory_used_bytes": 1, "memory_total_bytes": 2}
    executed = []
    real_execute = psycopg.Cursor.execute

    def counting_execute(self, query, *args, **kwargs):
        executed.append(query)
        return real_execute(self, query, *args, **kwargs)

    with CaptureQueriesContext(connection) as queries, mock.patch.object(psycopg.Cursor, "execute", counting_execute):
        result = services.agent_heartbeat_record(
            agent_id=agent.pk, token=token, state="busy", readings=readings, latency_ms=12.5
        )
    # The statement goes through psycopg's own (prepared) cursor; nothing else is sent.
    assert len([q for q in executed if "SAVEPOINT" not in q]) == 1 and _statements(queries) == []
    assert result.commands == [] and result.status == AgentStatus.ONLINE
    agent.refresh_from_db()
    assert agent.state == "busy"
    assert agent.readings == readings
    assert agent.last_latency_ms == 12.5
    # ...and the readings became a telemetry sample in that same statement.
    with connection.cursor() as cur:
        cur.execute("SELECT cpu_percent, memory_used_bytes FROM metrics_host_sample WHERE agent_id = %s", [agent.pk])
        assert cur.fetchall() == [(37.5, 1)]


def test_one_batch_records_many_agents_and_says_why_each_refusal(enrollment_key, operator):
    agents = [register(enrollment_key, name=f"b{i}") for i in range(3)]
    (a, token_a), (b, token_b), (c, token_c) = agents
    Agent.objects.filter(pk=b.pk).update(status=AgentStatus.STALE)
    drain = services.agent_command_issue(agent=c, type=CommandType.DRAIN, actor=operator)
    beats = [
        services.Heartbeat(agent_id=a.pk, token=token_a, state="busy"),
        services.Heartbeat(agent_id=b.pk, token=token_b, state="idle"),
        services.Heartbeat(agent_id=c.pk, token=token_c, state="draining"),
        services.Heartbeat(agent_id=uuid.uuid4(), token=token_a, state="idle"),
        services.Heartbeat(agent_id=uuid.uuid4(), token="pga_nope", state="idle"),
    ]

    results = services.agent_heartbeats_record(beats=beats)

    assert [r.status if isinstance(r, services.HeartbeatResult) else r.code for r in results] == [
        "online", "online", "online", "unknown_agent", "invalid_token"]
    assert [cmd["id"] for cmd in results[2].commands] == [str(drain.pk)]
    assert results[0].commands == [] and results[1].commands == []
    assert Agent.objects.get(pk=a.pk).state == "busy"
    assert AgentEvent.objects.filter(agent=b, kind=EventKind.STATUS_CHANGED, to_status="online").count() == 1


def test_an_agent_may_appear_once_per_batch(agent_and_token):
    agent, token = agent_and_token
    beat = services.Heartbeat(agent_id=agent.pk, token=token, state="idle")
    with pytest.raises(ValueError):
        services.agent_heartbeats_record(beats=[beat, beat])


def test_heartbeat_revives_a_stale_agent_and_records_the_transition(agent_and_token):
    agent, token = agent_and_token
    Agent.objects.filter(pk=agent.pk).update(status=AgentStatus.STALE)

    result = services.agent_heartbeat_record(agent_id=agent.pk, token=token, state="idle")

    assert result.status == AgentStatus.ONLINE
    event = AgentEvent.objects.filter(kind=EventKind.STATUS_CHANGED).get()
    assert (event.from_status, event.to_status) == (AgentStatus.STALE, AgentStatus.ONLINE)


def test_heartbeat_does_not_release_an_isolated_agent(agent_and_token, operator):
    agent, token = agent_and_token
    services.agent_command_issue(agent=agent, type=CommandType.ISOLATE, actor=operator)
    assert services.agent_heartbeat_record(agent_id=agent.pk, token=token, state="idle").status == AgentStatus.ISOLATED


def test_pending_commands_are_delivered_exactly_once(agent_and_token, operator):
    agent, token = agent_and_token
    drain = services.agent_command_issue(agent=agent, type=CommandType.DRAIN, actor=operator)
    restart = services.agent_command_issue(agent=agent, type=CommandType.RESTART, actor=operator)

    first = services.agent_heartbeat_record(agent_id=agent.pk, token=token, state="idle")
    second = services.agent_heartbeat_record(agent_id=agent.pk, token=token, state="idle")

    assert [(c["id"], c["type"]) for c in first.commands] == [(str(drain.pk), "drain"), (str(restart.pk), "restart")]
    assert second.commands == []
    assert set(AgentCommand.objects.values_list("status", flat=True)) == {CommandStatus.DELIVERED}


def test_issuing_the_same_command_twice_while_pending_is_idempotent(agent_and_token, operator):
    agent, _ = agent_and_token
    a = services.agent_command_issue(agent=agent, type=CommandType.RESTART, actor=operator)
    b = services.agent_command_issue(agent=agent, type=CommandType.RESTART, actor=operator)
    assert a.pk == b.pk and AgentCommand.objects.count() == 1


def test_a_command_is_acknowledged_once(agent_and_token, operator):
    agent, token = agent_and_token
    command = services.agent_command_issue(agent=agent, type=CommandType.DRAIN, actor=operator)
    services.agent_heartbeat_record(agent_id=agent.pk, token=token, state="idle")

    services.agent_command_ack(agent=agent, command_id=command.pk, ok=False, message="busy with a job")
    with pytest.raises(Conflict):
        services.agent_command_ack(agent=agent, command_id=command.pk, ok=True)

    command.refresh_from_db()
    assert command.status == CommandStatus.FAILED and command.result == "busy with a job"


def test_an_agent_cannot_ack_another_agents_command(enrollment_key, operator):
    a, _ = register(enrollment_key, name="a")
    b, _ = register(enrollment_key, name="b")
    command = services.agent_command_issue(agent=a, type=CommandType.DRAIN, actor=operator)
    with pytest.raises(NotFound):
        services.agent_command_ack(agent=b, command_id=command.pk, ok=True)


@pytest.mark.parametrize("which", ["unknown_token", "other_agents_token", "unknown_agent"])
def test_heartbeat_refusals_say_why_and_write_nothing(enrollment_key, which):
    a, token_a = register(enrollment_key, name="a")
    b, token_b = register(enrollment_key, name="b")
    before = Agent.objects.get(pk=a.pk).last_heartbeat_at
    agent_id, token, error = {
        "unknown_token": (a.pk, "pga_nope", AuthenticationFailed),
        "other_agents_token": (a.pk, token_b, PermissionDenied),
        "unknown_agent": ("00000000-0000-0000-0000-000000000000", token_a, NotFound),
    }[which]

    with pytest.raises(error):
        services.agent_heartbeat_record(agent_id=agent_id, token=token, state="busy")

    assert Agent.objects.get(pk=a.pk).last_heartbeat_at == before
    assert Agent.objects.get(pk=a.pk).state == "idle"


def test_silence_moves_agents_online_to_late_to_stale_in_one_statement(enrollment_key, settings):
    settings.PULSEGUARD_HEARTBEAT_INTERVAL = 15
    settings.PULSEGUARD_STALE_AFTER = 300
    t0 = timezone.now()
    with time_machine.travel(t0, tick=False):
        agents = [register(enrollment_key, name=f"a{i}")[0] for i in range(5)]
    isolated = agents[4]
    services.agent_command_issue(agent=isolated, type=CommandType.ISOLATE)

    with CaptureQueriesContext(connection) as queries:
        assert services.agents_check_heartbeats(now=t0 + timedelta(seconds=29)) == []
    assert len(_statements(queries)) == 1

    moved = services.agents_check_heartbeats(now=t0 + timedelta(seconds=31))
    assert {t.to_status for t in moved} == {AgentStatus.LATE} and len(moved) == 4

    moved = services.agents_check_heartbeats(now=t0 + timedelta(seconds=301))
    assert {(t.from_status, t.to_status) for t in moved} == {(AgentStatus.LATE, AgentStatus.STALE)}
    assert services.agents_check_heartbeats(now=t0 + timedelta(seconds=400)) == []

    assert Agent.objects.get(pk=isolated.pk).status == AgentStatus.ISOLATED
    history = list(
        AgentEvent.objects.filter(agent=agents[0], kind=EventKind.STATUS_CHANGED).order_by("created_at")
        .values_list("from_status", "to_status", "message")
    )
    assert history == [("online", "late", "No heartbeat for 31 s"), ("late", "stale", "No heartbeat for 301 s")]


def test_an_agent_silent_past_stale_after_goes_straight_to_stale(agent_and_token):
    agent, _ = agent_and_token
    moved = services.agents_check_heartbeats(now=timezone.now() + timedelta(hours=1))
    assert [(t.from_status, t.to_status) for t in moved] == [("online", "stale")]


def test_goodbye_is_offline_not_stale_and_a_heartbeat_brings_it_back(agent_and_token):
    agent, token = agent_and_token
    services.agent_goodbye(agent=agent)
    assert Agent.objects.get(pk=agent.pk).status == AgentStatus.OFFLINE
    assert services.agents_check_heartbeats(now=timezone.now() + timedelta(hours=1)) == []
    assert services.agent_heartbeat_record(agent_id=agent.pk, token=token, state="idle").status == AgentStatus.ONLINE


def test_release_returns_an_isolated_agent_to_the_status_its_silence_earns(agent_and_token, operator):
    agent, _ = agent_and_token
    services.agent_command_issue(agent=agent, type=CommandType.ISOLATE, actor=operator)
    Agent.objects.filter(pk=agent.pk).update(last_heartbeat_at=timezone.now() - timedelta(hours=1))
    services.agent_command_issue(agent=agent, type=CommandType.RELEASE, actor=operator)
    assert Agent.objects.get(pk=agent.pk).status == AgentStatus.STALE


def test_enrollment_key_needs_a_positive_use_limit(db):
    with pytest.raises(ApplicationError):
        services.enrollment_key_create(name="zero", max_uses=0)
