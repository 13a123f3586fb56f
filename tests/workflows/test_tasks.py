"""The task state machine against real PostgreSQL: claims, leases, retries, timeouts."""

import threading
from datetime import timedelta

import pytest
import time_machine
from django.db import connection
from django.utils import timezone

from apps.agents.models import Agent
from apps.core.errors import ApplicationError
from apps.workflows import services
from apps.workflows.models import Task, TaskAttempt
from tests.conftest import agent_client, register

pytestmark = pytest.mark.django_db


@pytest.fixture
def worker(enrollment_key):
    return register(enrollment_key, "coder-1", capabilities=["code", "python"])


def _task(**kw):
    kw.setdefault("kind", "code.review")
    kw.setdefault("resources", {"class": "cpu"})
    return services.task_create(**kw)[0]


def test_create_routes_records_the_reason_and_honours_idempotency():
    explicit = _task()
    assert (explicit.resource_class, explicit.routing_reason) == ("cpu", "explicit resources")
    trained = services.task_create(kind="model.finetune", payload={"model": "llama-3.1-8b-instruct"})[0]
    assert trained.resource_class == "gpu" and trained.routing_score >= 0.5
    assert "finetune" in trained.routing_reason and "runs locally" in trained.routing_reason
    mail = services.task_create(kind="email.notify", model="gpt-4o-mini")[0]
    assert mail.resource_class == "cpu" and "served by an API" in mail.routing_reason
    first, created = services.task_create(kind="code.review", idempotency_key="pr-881")
    again, created_again = services.task_create(kind="code.review", idempotency_key="pr-881")
    assert created and not created_again and again.pk == first.pk


def test_skills_run_on_celery_and_their_payload_is_checked():
    echo = services.task_create(kind="demo.echo", payload={"message": "hi"})[0]
    assert echo.runner == "celery"
    with pytest.raises(ApplicationError) as exc:
        services.task_create(kind="demo.sleep", payload={"seconds": "long"})
    assert exc.value.code == "invalid_payload" and "payload.seconds" in exc.value.fields
    with pytest.raises(ApplicationError) as exc:
        services.task_create(kind="nope.skill", runner="celery")
    assert exc.value.code == "unknown_skill"
    assert Task.objects.count() == 1


def test_more_vram_than_any_gpu_has_is_refused(enrollment_key):
    register(enrollment_key, "gpu-box", host={"gpus": [{"index": 0, "name": "H100", "memory_total_bytes": 80 * 2**30}]})
    with pytest.raises(ApplicationError) as exc:
        services.task_create(kind="model.train", resources={"class": "gpu", "vram_mb": 200_000})
    assert exc.value.code == "impossible_resources"
    assert services.task_create(kind="model.train", resources={"vram_mb": 40_000})[0].resource_class == "gpu"


def test_claims_match_capabilities_priority_and_gpu_memory(worker, enrollment_key):
    agent, _ = worker
    low = _task(priority=1, required_capabilities=["code"])
    high = _task(priority=9, required_capabilities=["code"])
    _task(required_capabilities=["rust"])  # not for this agent
    claimed = services.tasks_claim(agent=agent, limit=5)
    assert [c.id for c in claimed] == [high.pk, low.pk]
    assert [c.attempt for c in claimed] == [1, 1]
    assert set(Task.objects.filter(pk__in=[low.pk, high.pk]).values_list("state", flat=True)) == {"leased"}
    gpu_job = _task(kind="embed.batch", resources={"class": "gpu", "vram_mb": 30_000})
    assert services.tasks_claim(agent=agent) == []  # no GPU on this agent
    small, _ = register(enrollment_key, "l4-box", host={"gpus": [{"index": 0, "memory_total_bytes": 24 * 2**30}]})
    assert services.tasks_claim(agent=small) == []  # 24 GiB is not enough
    big, _ = register(enrollment_key, "a100-box", host={"gpus": [{"index": 0, "memory_total_bytes": 80 * 2**30}]})
    assert [c.id for c in services.tasks_claim(agent=big)] == [gpu_job.pk]


def test_draining_isolated_or_stale_agents_get_no_work(worker):
    agent, _ = worker
    _task()
    for status, state in (("online", "draining"), ("isolated", "idle"), ("stale", "idle")):
        Agent.objects.filter(pk=agent.pk).update(status=status, state=state)
        assert services.tasks_claim(agent=agent) == []


@pytest.mark.django_db(transaction=True)
def test_fifty_concurrent_claimers_never_get_the_same_task(enrollment_key):
    agents = [register(enrollment_key, f"claimer-{i}")[0] for i in range(10)]
    tasks = [_task() for _ in range(60)]
    got: list[int] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def claim(agent):
        try:
            for _ in range(5):
                ids = [c.id for c in services.tasks_claim(agent=agent, limit=2)]
                with lock:
                    got.extend(ids)
        except BaseException as exc:  # surfaced below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=claim, args=(agents[i % 10],)) for i in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(got) == len(set(got)) == len(tasks)
    assert TaskAttempt.objects.count() == 60


def test_complete_fail_and_renew_only_for_the_holder(worker, enrollment_key):
    agent, _ = worker
    other, _ = register(enrollment_key, "someone-else", capabilities=["code"])
    task = _task(max_attempts=2, backoff_base_s=0)
    services.tasks_claim(agent=agent)
    with pytest.raises(ApplicationError) as exc:
        services.task_complete(agent=other, task_id=task.pk)
    assert exc.value.code == "not_holder"
    assert services.tasks_renew(agent=agent, task_ids=[task.pk, 999999]) == {"renewed": [task.pk], "lost": [999999]}
    failed = services.task_fail(agent=agent, task_id=task.pk, error_type="rate_limit", message="429 from provider")
    assert failed.state == "queued" and failed.agent is None and "retry 2/2" in failed.wait_reason
    services.tasks_claim(agent=agent)
    done = services.task_complete(agent=agent, task_id=task.pk, result={"ok": 1})
    assert done.state == "succeeded" and done.result == {"ok": 1}
    assert list(TaskAttempt.objects.filter(task=task).values_list("number", "outcome", "error_type")) == [
        (1, "failed", "rate_limit"), (2, "succeeded", "")]
    with pytest.raises(ApplicationError) as exc:
        services.task_complete(agent=agent, task_id=task.pk)
    assert exc.value.code == "already_finished"


def test_rejected_work_is_not_retried_and_the_last_attempt_fails_the_task(worker):
    agent, _ = worker
    rejected = _task(max_attempts=5)
    services.tasks_claim(agent=agent)
    assert services.task_fail(agent=agent, task_id=rejected.pk, error_type="rejected").state == "failed"
    once = _task(max_attempts=1)
    services.tasks_claim(agent=agent)
    assert services.task_fail(agent=agent, task_id=once.pk).state == "failed"


def test_backoff_grows_exponentially_with_jitter():
    task = Task(backoff_base_s=2, backoff_max_s=60)
    delays = [services.backoff_s(task, n) for n in range(1, 8) for _ in range(20)]
    by_attempt = [delays[i * 20:(i + 1) * 20] for i in range(7)]
    for n, values in enumerate(by_attempt, start=1):
        cap = min(60, 2 * 2 ** (n - 1))
        assert all(cap / 2 <= v <= cap for v in values)
    assert len(set(by_attempt[3])) > 1  # jittered


def test_an_expired_lease_goes_back_to_the_queue_and_a_late_completion_is_refused(worker):
    agent, _ = worker
    task = _task(attempt_timeout_s=30, backoff_base_s=0)
    services.tasks_claim(agent=agent)
    with time_machine.travel(timezone.now() + timedelta(seconds=31)):
        with pytest.raises(ApplicationError) as exc:
            services.task_complete(agent=agent, task_id=task.pk)
        assert exc.value.code == "lease_expired"
        assert services.tasks_expire()["lease_lost"] == 1
    task.refresh_from_db()
    assert task.state == "queued" and task.error_type == "lease_lost"
    assert TaskAttempt.objects.get(task=task).outcome == "lease_lost"


def test_work_held_by_a_stale_or_isolated_agent_is_reassigned(worker, enrollment_key):
    agent, _ = worker
    task = _task(backoff_base_s=0)
    services.tasks_claim(agent=agent)
    Agent.objects.filter(pk=agent.pk).update(status="stale")
    assert services.tasks_expire()["lease_lost"] == 1
    rescuer, _ = register(enrollment_key, "rescuer", capabilities=["code"])
    assert [c.id for c in services.tasks_claim(agent=rescuer)] == [task.pk]
    assert services.tasks_claim(agent=rescuer) == []


def test_queued_and_overall_timeouts(worker):
    agent, _ = worker
    running = _task(overall_timeout_s=120, attempt_timeout_s=600)
    services.tasks_claim(agent=agent)
    waiting = _task(queued_timeout_s=60, required_capabilities=["cobol"])  # nobody can run it
    with time_machine.travel(timezone.now() + timedelta(seconds=130)):
        counts = services.tasks_expire()
    assert counts["queued_timeout"] == 1 and counts["deadline"] == 1
    waiting.refresh_from_db()
    running.refresh_from_db()
    assert (waiting.state, running.state) == ("timed_out", "timed_out")
    assert TaskAttempt.objects.get(task=running).outcome == "timed_out"


def test_cancel_and_retry_with_a_priority_boost(worker):
    agent, _ = worker
    task = _task()
    services.tasks_claim(agent=agent)
    services.task_cancel(task_id=task.pk)
    assert services.tasks_renew(agent=agent, task_ids=[task.pk])["lost"] == [task.pk]
    with pytest.raises(ApplicationError) as exc:
        services.task_cancel(task_id=task.pk)
    assert exc.value.code == "already_finished"
    retried = services.task_retry(task_id=task.pk, priority_boost=10)
    assert (retried.state, retried.priority) == ("queued", 10)
    with pytest.raises(ApplicationError) as exc:
        services.task_retry(task_id=task.pk)
    assert exc.value.code == "not_retryable"
    assert [c.attempt for c in services.tasks_claim(agent=agent)] == [2]


# --- API -----------------------------------------------------------------------------------

def test_the_api_round_trip_with_roles(worker, operator_api, viewer_api):
    agent, token = worker
    r = operator_api.post("/api/v1/tasks", {"kind": "code.review", "payload": {"pr": 881},
                                            "required_capabilities": ["code"], "idempotency_key": "pr-881"}, format="json")
    assert r.status_code == 201, r.content
    task_id = r.json()["id"]
    assert operator_api.post("/api/v1/tasks", {"kind": "code.review", "idempotency_key": "pr-881"},
                             format="json").json()["id"] == task_id
    assert viewer_api.post("/api/v1/tasks", {"kind": "x"}, format="json").status_code == 403
    me = agent_client(token)
    r = me.post("/api/v1/tasks/claim", {"limit": 3}, format="json")
    assert r.status_code == 200 and [t["id"] for t in r.json()["tasks"]] == [task_id]
    assert me.post("/api/v1/tasks/renew", {"task_ids": [task_id]}, format="json").json()["renewed"] == [task_id]
    r = me.post(f"/api/v1/tasks/{task_id}/complete", {"result": {"verdict": "lgtm"}}, format="json")
    assert r.status_code == 200 and r.json()["state"] == "succeeded"
    assert me.post(f"/api/v1/tasks/{task_id}/complete", {}, format="json").status_code == 409
    detail = viewer_api.get(f"/api/v1/tasks/{task_id}").json()
    assert [a["outcome"] for a in detail["attempts"]] == ["succeeded"]
    listed = viewer_api.get("/api/v1/tasks", {"state": "succeeded"}).json()
    assert [t["id"] for t in listed["results"]] == [task_id]
    assert viewer_api.get("/api/v1/tasks", {"state": "bogus"}).status_code == 400
    assert operator_api.post("/api/v1/tasks/claim", {}, format="json").status_code in (401, 403)


@pytest.mark.parametrize("body, field", [
    ({"kind": ""}, "kind"),
    ({"kind": "x", "priority": "high"}, "priority"),
    ({"kind": "x", "resources": {"class": "tpu"}}, "resources"),
    ({"kind": "x", "colour": "red"}, "colour"),
    ({"kind": "x", "max_attempts": 0}, "max_attempts"),
])
def test_bad_task_input_is_refused_and_nothing_is_written(operator_api, body, field):
    r = operator_api.post("/api/v1/tasks", body, format="json")
    assert r.status_code == 400
    assert field in r.json()["error"]["fields"]
    assert Task.objects.count() == 0


def test_the_circuit_breaker_opens_after_failures_in_a_row_then_allows_one_trial(worker, settings):
    from apps.workflows.breaker import breaker_reset, breaker_states

    settings.PULSEGUARD_BREAKER_FAILURES = 3
    settings.PULSEGUARD_BREAKER_COOLDOWN = 60
    agent, _ = worker
    for _ in range(3):
        task = _task(max_attempts=1)
        services.tasks_claim(agent=agent)
        services.task_fail(agent=agent, task_id=task.pk, error_type="connection")
    state = breaker_states(agent_ids=[agent.pk])[str(agent.pk)]
    assert (state.state, state.failures_in_a_row) == ("open", 3)
    queued = [_task(), _task()]
    assert services.tasks_claim(agent=agent, limit=5) == []  # open: no work
    with time_machine.travel(timezone.now() + timedelta(seconds=61)):
        assert breaker_states(agent_ids=[agent.pk])[str(agent.pk)].state == "half_open"
        trial = services.tasks_claim(agent=agent, limit=5)
        assert [c.id for c in trial] == [queued[0].pk]  # one trial only
        assert services.tasks_claim(agent=agent, limit=5) == []  # while it runs
        services.task_complete(agent=agent, task_id=trial[0].id)
        assert breaker_states(agent_ids=[agent.pk])[str(agent.pk)].state == "closed"
        assert [c.id for c in services.tasks_claim(agent=agent, limit=5)] == [queued[1].pk]


def test_an_operator_can_reset_a_breaker(worker, settings):
    from apps.workflows.breaker import breaker_reset, breaker_states

    settings.PULSEGUARD_BREAKER_FAILURES = 2
    agent, _ = worker
    for _ in range(2):
        task = _task(max_attempts=1)
        services.tasks_claim(agent=agent)
        services.task_fail(agent=agent, task_id=task.pk)
    assert breaker_states(agent_ids=[agent.pk])[str(agent.pk)].state == "open"
    assert breaker_reset() == 1
    assert breaker_states(agent_ids=[agent.pk])[str(agent.pk)].state == "closed"
    assert breaker_reset() == 0
    _task()
    assert len(services.tasks_claim(agent=agent)) == 1


def test_health_follows_task_success(worker, settings):
    from apps.agents.selectors import agents_with_health

    settings.PULSEGUARD_BREAKER_FAILURES = 50  # this test is about the score, not the breaker
    agent, token = worker
    from apps.agents import services as agent_services

    agent_services.agent_heartbeat_record(agent_id=agent.pk, token=token, state="idle", latency_ms=50)
    fresh = agents_with_health([Agent.objects.get(pk=agent.pk)])[0]
    assert fresh.health_score == 100
    for i in range(10):
        task = _task(max_attempts=1)
        services.tasks_claim(agent=agent)
        if i < 4:
            services.task_complete(agent=agent, task_id=task.pk)
        else:
            services.task_fail(agent=agent, task_id=task.pk)
    scored = agents_with_health([Agent.objects.get(pk=agent.pk)])[0]
    assert scored.work == (10, 4)
    assert scored.health_score == 70


def test_reassign_to_a_named_agent_or_the_least_loaded_healthy_one(worker, enrollment_key, operator_api):
    agent, _ = worker
    busy, _ = register(enrollment_key, "busy-coder", capabilities=["code"])
    idle, _ = register(enrollment_key, "idle-coder", capabilities=["code"])
    register(enrollment_key, "writer", capabilities=["docs"])
    _task(required_capabilities=["code"])
    services.tasks_claim(agent=busy)  # busy-coder now holds one task
    task = _task(required_capabilities=["code"])
    services.tasks_claim(agent=agent)
    moved = services.task_reassign(task_id=task.pk)
    assert moved.assigned_agent.name == "idle-coder" and moved.state == "queued"
    assert TaskAttempt.objects.get(task=task).outcome == "cancelled"  # not held against coder-1
    assert services.tasks_claim(agent=agent) == [] and services.tasks_claim(agent=busy) == []
    assert [c.id for c in services.tasks_claim(agent=idle)] == [task.pk]
    # Named target; one without the capability is refused.
    r = operator_api.post(f"/api/v1/tasks/{task.pk}/reassign", {"agent": str(agent.pk)}, format="json")
    assert r.status_code == 200 and r.json()["wait_reason"].startswith("reassigned to coder-1")
    writer = Agent.objects.get(name="writer")
    r = operator_api.post(f"/api/v1/tasks/{task.pk}/reassign", {"agent": str(writer.pk)}, format="json")
    assert r.status_code == 400 and r.json()["error"]["code"] == "missing_capabilities"
    # A failure after a reassign may go to anyone.
    services.tasks_claim(agent=agent)
    assert services.task_fail(agent=agent, task_id=task.pk).assigned_agent is None


def test_a_heartbeat_renews_the_leases_it_names(worker, enrollment_key):
    from apps.agents import services as agent_services

    agent, token = worker
    task = _task(attempt_timeout_s=60)
    services.tasks_claim(agent=agent)
    with time_machine.travel(timezone.now() + timedelta(seconds=50)):
        result = agent_services.agent_heartbeat_record(agent_id=agent.pk, token=token, state="busy",
                                                       task_ids=[task.pk, 424242])
        assert result.tasks == {"renewed": [task.pk], "lost": [424242]}
    with time_machine.travel(timezone.now() + timedelta(seconds=100)):
        assert services.tasks_expire()["lease_lost"] == 0  # renewed at 50 s: good until 110 s
    r = agent_client(token).post(f"/api/v1/agents/{agent.pk}/heartbeat", {"state": "busy", "task_ids": [task.pk]},
                                 format="json")
    assert r.status_code == 200 and r.json()["tasks"] == {"renewed": [task.pk], "lost": []}
    r = agent_client(token).post(f"/api/v1/agents/{agent.pk}/heartbeat", {"state": "busy"}, format="json")
    assert "tasks" not in r.json()


def test_while_dispatch_is_paused_nobody_gets_work(worker, operator):
    from apps.workflows import controls, dispatch

    agent, _ = worker
    task = _task()
    echo = services.task_create(kind="demo.echo", payload={})[0]
    try:
        controls.dispatch_pause(actor=operator, reason="maintenance")
        assert services.tasks_claim(agent=agent) == []
        assert dispatch.tasks_dispatch() == {"dispatched": 0, "waiting": 0}
        controls.dispatch_resume(actor=operator, reason="done")
        assert [c.id for c in services.tasks_claim(agent=agent)] == [task.pk]
        assert dispatch.tasks_dispatch()["dispatched"] == 1
        echo.refresh_from_db()
        # A message sent before a pause starts nothing during it; it is sent again after.
        controls.dispatch_pause(actor=operator, reason="again")
        assert dispatch.task_start_dispatched(task_id=echo.pk, token=str(echo.dispatch_token), worker=agent) is None
        echo.refresh_from_db()
        assert echo.dispatched_at is None and "paused" in echo.wait_reason
    finally:
        controls.dispatch_paused_forget()


def test_gpu_claims_pick_a_device_and_count_what_the_agent_already_holds(enrollment_key):
    box, token = register(enrollment_key, "gpu-box", host={"gpus": [
        {"index": 0, "memory_total_bytes": 80 * 2**30}, {"index": 1, "memory_total_bytes": 80 * 2**30}]})
    from apps.agents import services as agent_services

    agent_services.agent_heartbeat_record(agent_id=box.pk, token=token, state="idle", readings={"gpus": [
        {"index": 0, "memory_total_bytes": 80 * 2**30, "memory_used_bytes": 10 * 2**30, "utilization_percent": 50.0},
        {"index": 1, "memory_total_bytes": 80 * 2**30, "memory_used_bytes": 30 * 2**30, "utilization_percent": 5.0}]})
    jobs = [_task(kind="model.train", resources={"class": "gpu", "vram_mb": 40_000}) for _ in range(3)]
    first = services.tasks_claim(agent=box)
    assert Task.objects.get(pk=first[0].id).gpu_index == 1  # least utilised with room
    second = services.tasks_claim(agent=box)
    assert Task.objects.get(pk=second[0].id).gpu_index == 0  # GPU 1 now holds 40 GB of the 50 free
    # Both GPUs are spoken for, whatever the (older) readings say.
    assert services.tasks_claim(agent=box) == []
    assert Task.objects.get(pk=jobs[2].pk).state == "queued"
