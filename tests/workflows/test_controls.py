"""Emergency controls: each is idempotent, audited with its counts, and behind the operator
role and an explicit confirmation in the API."""

from datetime import timedelta

import pytest
import time_machine
from django.conf import settings
from django.utils import timezone

from apps.agents.models import Agent, AgentCommand
from apps.core.errors import ApplicationError
from apps.security.models import AuditRecord, FleetControl
from apps.workflows import controls, services
from apps.workflows.breaker import breaker_states
from apps.workflows.models import Task, TaskAttempt
from tests.conftest import agent_client, register

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fresh_pause_cache():
    # The answer is cached per process: never let one test's pause leak into the next.
    controls.dispatch_paused_forget()
    yield
    controls.dispatch_paused_forget()


@pytest.fixture
def worker(enrollment_key):
    return register(enrollment_key, "coder-1", capabilities=["code", "python"])


def _task(**kw):
    kw.setdefault("kind", "code.review")
    kw.setdefault("resources", {"class": "cpu"})
    return services.task_create(**kw)[0]


def _audits(action):
    return list(AuditRecord.objects.filter(action=f"controls.{action}").order_by("id")
                .values_list("actor_name", "affected"))


# --- pause / resume --------------------------------------------------------------------------------

def test_pausing_twice_keeps_one_paused_state_and_the_second_affects_nothing(operator):
    _task()
    assert controls.dispatch_paused() is False
    first = controls.dispatch_pause(actor=operator, reason="db failover")
    second = controls.dispatch_pause(actor=operator, reason="again")
    assert (first.affected, second.affected) == (1, 0)
    assert first.details == {"already_paused": False, "queued_tasks": 1, "reason": "db failover"}
    assert second.details["already_paused"] is True
    assert controls.dispatch_paused() is True
    control = FleetControl.objects.get()
    assert (control.paused, control.reason, control.changed_by) == (True, "db failover", operator)
    assert _audits("pause") == [("oscar-operator", 1), ("oscar-operator", 0)]

    assert controls.dispatch_resume(actor=operator).affected == 1
    assert controls.dispatch_resume(actor=operator).affected == 0
    assert controls.dispatch_paused() is False
    assert FleetControl.objects.get().reason == ""
    assert _audits("resume") == [("oscar-operator", 1), ("oscar-operator", 0)]


def test_the_paused_answer_is_cached_for_at_most_two_seconds(operator, monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr(controls, "_clock", lambda: clock[0])
    assert controls.dispatch_paused() is False
    # Another process pauses: this one's cached answer holds until the cache is 2 s old.
    FleetControl.objects.update_or_create(pk=1, defaults={"paused": True})
    clock[0] += 1.9
    assert controls.dispatch_paused() is False
    clock[0] += 0.2
    assert controls.dispatch_paused() is True
    # A flip in this process is seen at once.
    controls.dispatch_resume(actor=operator)
    assert controls.dispatch_paused() is False


# --- stop all, clear queue ---------------------------------------------------------------------------

def test_stop_all_cancels_every_held_task_and_its_attempt(worker, operator):
    agent, token = worker
    held = [_task(), _task(), _task(kind="web.scrape")]
    services.tasks_claim(agent=agent, limit=3)
    services.tasks_renew(agent=agent, task_ids=[held[0].pk])  # now running
    waiting = _task()

    result = controls.tasks_stop_all(actor=operator)
    assert result.affected == 3
    assert result.details == {"tasks": 3, "attempts": 3, "by_kind": {"code.review": 2, "web.scrape": 1},
                              "task_ids": sorted(t.pk for t in held)}
    assert set(Task.objects.filter(pk__in=[t.pk for t in held]).values_list("state", flat=True)) == {"cancelled"}
    assert Task.objects.filter(pk__in=[t.pk for t in held], finished_at__isnull=True).count() == 0
    attempts = TaskAttempt.objects.filter(task__in=held)
    assert {(a.outcome, a.error_type, a.error_message) for a in attempts} == {
        ("cancelled", "cancelled", "cancelled by oscar-operator (stop all)")}
    assert Task.objects.get(pk=waiting.pk).state == "queued"  # the queue is another control

    # The holder hears it at its next renew, and its completion is refused.
    me = agent_client(token)
    assert me.post("/api/v1/tasks/renew", {"task_ids": [held[0].pk]}, format="json").json()["lost"] == [held[0].pk]
    r = me.post(f"/api/v1/tasks/{held[1].pk}/complete", {}, format="json")
    assert r.status_code == 409 and r.json()["error"]["code"] == "already_finished"

    assert controls.tasks_stop_all(actor=operator).affected == 0
    assert _audits("stop-all") == [("oscar-operator", 3), ("oscar-operator", 0)]


def test_clear_queue_cancels_queued_and_backing_off_tasks_only(worker, operator):
    agent, _ = worker
    held = _task(max_attempts=3)
    services.tasks_claim(agent=agent)
    retrying = _task(backoff_base_s=60)
    services.tasks_claim(agent=agent)
    services.task_fail(agent=agent, task_id=retrying.pk, error_type="connection")  # queued, backing off
    queued = [_task(), _task(kind="demo.echo", payload={"message": "x"})]
    assert Task.objects.get(pk=retrying.pk).not_before is not None

    result = controls.queue_clear(actor=operator, reason="bad deploy queued junk")
    assert result.affected == 3
    assert result.details["by_kind"] == {"code.review": 2, "demo.echo": 1}
    assert result.details["reason"] == "bad deploy queued junk"
    assert Task.objects.filter(state="cancelled").count() == 3
    assert Task.objects.get(pk=held.pk).state == "leased"
    assert Task.objects.get(pk=retrying.pk).not_before is None
    assert [(a.number, a.outcome) for a in TaskAttempt.objects.filter(task=retrying)] == [(1, "failed")]
    assert {t.pk for t in queued} <= set(result.details["task_ids"])

    assert controls.queue_clear(actor=operator).affected == 0
    assert services.tasks_claim(agent=agent) == []
    record = AuditRecord.objects.filter(action="controls.clear-queue").order_by("id").first()
    assert (record.actor, record.target, record.affected) == (operator, "all queued tasks", 3)


# --- agents ----------------------------------------------------------------------------------------

def test_restart_agents_reaches_online_and_late_agents_once(enrollment_key, operator):
    names = {"a-online": "online", "b-online": "online", "c-late": "late", "d-stale": "stale", "e-isolated": "isolated"}
    for name, status in names.items():
        agent = register(enrollment_key, name)[0]
        Agent.objects.filter(pk=agent.pk).update(status=status)

    result = controls.agents_restart_all(actor=operator)
    assert result.affected == 3
    assert result.details == {"issued": 3, "already_pending": 0, "agents": ["a-online", "b-online", "c-late"]}
    commands = AgentCommand.objects.filter(type="restart", status="pending")
    assert sorted(commands.values_list("agent__name", flat=True)) == ["a-online", "b-online", "c-late"]
    assert set(commands.values_list("issued_by", flat=True)) == {operator.pk}

    again = controls.agents_restart_all(actor=operator)
    assert (again.affected, again.details["already_pending"]) == (0, 3)
    assert commands.count() == 3
    assert _audits("restart-agents") == [("oscar-operator", 3), ("oscar-operator", 0)]


def test_auto_heal_requeues_lost_work_and_restarts_stale_agents(worker, enrollment_key, operator):
    agent, _ = worker
    lost = _task(attempt_timeout_s=30, backoff_base_s=0)
    services.tasks_claim(agent=agent)
    stale = register(enrollment_key, "sleepy")[0]
    Agent.objects.filter(pk=stale.pk).update(status="stale")
    flaky = register(enrollment_key, "flaky")[0]
    for _ in range(settings.PULSEGUARD_BREAKER_FAILURES):  # a failure streak trips its breaker
        failing = Task.objects.create(kind="x", runner="agent", resource_class="cpu", state="failed")
        TaskAttempt.objects.create(task=failing, number=1, agent=flaky, started_at=timezone.now(),
                                   ended_at=timezone.now(), outcome="failed", error_type="agent_error")
    assert breaker_states(agent_ids=[flaky.pk])[str(flaky.pk)].is_open

    with time_machine.travel(timezone.now() + timedelta(seconds=31)):
        result = controls.fleet_auto_heal(actor=operator)
        again = controls.fleet_auto_heal(actor=operator)
    assert result.details["expired"] == {"lease_lost": 1, "queued_timeout": 0, "deadline": 0}
    assert result.details["stale_agents"] == {"issued": 1, "already_pending": 0, "agents": ["sleepy"]}
    assert result.details["breakers_reset"] == 1
    assert Agent.objects.get(pk=flaky.pk).breaker_reset_at is not None
    assert result.affected == 3
    lost.refresh_from_db()
    assert (lost.state, lost.error_type) == ("queued", "lease_lost")
    assert TaskAttempt.objects.get(task=lost).outcome == "lease_lost"
    assert AgentCommand.objects.filter(agent=stale, type="restart", status="pending").count() == 1
    assert again.affected == 0
    assert _audits("auto-heal") == [("oscar-operator", 3), ("oscar-operator", 0)]


def test_an_unknown_control_is_a_programming_error(operator):
    with pytest.raises(ValueError):
        controls.control_run(action="self-destruct", actor=operator)


# --- API -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("action", list(controls.ACTIONS))
def test_each_control_needs_its_name_as_confirmation(operator_api, action):
    for body in ({}, {"confirm": ""}, {"confirm": "yes"}, {"confirm": "pause" if action != "pause" else "resume"}):
        r = operator_api.post(f"/api/v1/controls/{action}", body, format="json")
        assert r.status_code == 400, (action, body)
        error = r.json()["error"]
        assert error["code"] == "confirmation_required" and error["fields"] == {"confirm": [f'Must be "{action}".']}
        assert f'{{"confirm": "{action}"}}' in error["message"]
    assert AuditRecord.objects.count() == 0
    assert FleetControl.objects.get().paused is False


def test_controls_are_for_operators(anon_api, viewer_api, operator_api):
    for action in controls.ACTIONS:
        r = anon_api.post(f"/api/v1/controls/{action}", {"confirm": action}, format="json")
        assert r.status_code == 401 and r.json()["error"]["code"] == "authentication_required"
        r = viewer_api.post(f"/api/v1/controls/{action}", {"confirm": action}, format="json")
        assert r.status_code == 403 and r.json()["error"]["code"] == "permission_denied"
    assert AuditRecord.objects.count() == 0
    assert anon_api.get("/api/v1/controls").status_code == 401
    assert viewer_api.get("/api/v1/controls").status_code == 200
    assert operator_api.get("/api/v1/controls").status_code == 200


def test_pause_and_clear_through_the_api_with_audit(worker, operator_api, viewer_api):
    agent, _ = worker
    _task(), _task()
    r = operator_api.post("/api/v1/controls/pause", {"confirm": "pause", "reason": "provider outage"}, format="json")
    assert r.status_code == 200, r.content
    body = r.json()
    assert (body["action"], body["affected"]) == ("pause", 1)
    assert body["dispatch"]["paused"] is True and body["dispatch"]["reason"] == "provider outage"
    assert body["dispatch"]["changed_by"] == "oscar-operator"
    assert AuditRecord.objects.get(pk=body["audit_id"]).action == "controls.pause"
    assert operator_api.post("/api/v1/controls/pause", {"confirm": "pause"}, format="json").json()["affected"] == 0
    assert FleetControl.objects.filter(paused=True).count() == 1

    r = operator_api.post("/api/v1/controls/clear-queue", {"confirm": "clear-queue"}, format="json")
    assert (r.status_code, r.json()["affected"]) == (200, 2)
    assert Task.objects.filter(state="queued").count() == 0
    r = operator_api.post("/api/v1/controls/clear-queue", {"confirm": "clear-queue"}, format="json")
    assert r.json()["affected"] == 0

    state = viewer_api.get("/api/v1/controls").json()
    assert state["dispatch"]["paused"] is True
    assert [a["name"] for a in state["actions"]] == list(controls.ACTIONS)
    assert [(a["action"], a["affected"], a["actor"]) for a in state["recent"]] == [
        ("controls.clear-queue", 0, "oscar-operator"), ("controls.clear-queue", 2, "oscar-operator"),
        ("controls.pause", 0, "oscar-operator"), ("controls.pause", 1, "oscar-operator")]
    assert state["recent"][1]["details"]["by_kind"] == {"code.review": 2}

    diagnostics = viewer_api.get("/api/v1/coordination/diagnostics").json()
    assert diagnostics["dispatch"]["paused"] is True


def test_control_input_is_strict(operator_api):
    r = operator_api.post("/api/v1/controls/stop-all", {"confirm": "stop-all", "force": True}, format="json")
    assert r.status_code == 400 and "force" in r.json()["error"]["fields"]
    r = operator_api.post("/api/v1/controls/stop-all", {"confirm": "stop-all", "reason": "x" * 501}, format="json")
    assert r.status_code == 400 and "reason" in r.json()["error"]["fields"]
    r = operator_api.post("/api/v1/controls/stop-all", "[1, 2]", content_type="application/json")
    assert r.status_code == 400
    assert AuditRecord.objects.count() == 0


def test_a_control_that_fails_leaves_no_audit_record(operator, monkeypatch):
    def broken(**kwargs):
        raise ApplicationError("boom")

    monkeypatch.setattr(controls, "audit_record", broken)
    with pytest.raises(ApplicationError):
        controls.dispatch_pause(actor=operator)
    assert FleetControl.objects.get().paused is False  # rolled back with the audit


def test_a_restart_that_breaks_half_way_is_audited_with_what_it_did(enrollment_key, operator, monkeypatch):
    for name in ("a-1", "a-2", "a-3"):
        register(enrollment_key, name)
    real = controls.agent_command_issue

    def flaky(*, agent, **kwargs):
        if agent.name == "a-3":
            raise RuntimeError("database went away")
        return real(agent=agent, **kwargs)

    monkeypatch.setattr(controls, "agent_command_issue", flaky)
    with pytest.raises(RuntimeError):
        controls.agents_restart_all(actor=operator)
    record = AuditRecord.objects.get(action="controls.restart-agents")
    assert record.affected == 2 and record.details["agents"] == ["a-1", "a-2"]
    assert record.details["error"] == "RuntimeError: database went away"
    assert AgentCommand.objects.filter(type="restart").count() == 2
