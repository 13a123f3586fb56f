"""The SDK's task calls and work loop against the real server: uvicorn, the task API, PostgreSQL.

Tasks are queued with the real service (apps.workflows.services.task_create); the server
runs in its own process on the test database (tests/live.py), so these tests commit
(transactional_db) and read what the server wrote back from the database.
"""

from __future__ import annotations

import threading
import time

import pytest

from pulseguard_agent import AgentRunner, Client, TaskError, TaskLost, TaskRejected
from tests.live import uvicorn_server


@pytest.fixture(scope="module")
def pulseguard_url(django_db_setup, django_db_blocker, tmp_path_factory):
    with uvicorn_server(tmp_path_factory.mktemp("server") / "server.log") as url:
        yield url


@pytest.fixture
def enrollment_key(transactional_db) -> str:
    from apps.agents import services

    return services.enrollment_key_create(name="sdk-tasks")[1]


@pytest.fixture
def agent(pulseguard_url, enrollment_key) -> Client:
    client = Client(pulseguard_url, sleep=lambda s: None)
    client.register(enrollment_key, "reviewer-01", capabilities=["code-review"], host={})
    yield client
    client.close()


def _queue(kind: str = "code.review", **fields):
    from apps.workflows import services

    fields.setdefault("required_capabilities", ["code-review"])
    fields.setdefault("attempt_timeout_s", 30)
    task, _ = services.task_create(kind=kind, **fields)
    return task


def _task(task_id: int):
    from apps.workflows.models import Task

    return Task.objects.get(pk=task_id)


def _attempts(task_id: int) -> list[tuple]:
    from apps.workflows.models import TaskAttempt

    return list(TaskAttempt.objects.filter(task_id=task_id).order_by("number")
                .values_list("number", "outcome", "error_type", "error_message"))


def _until(check, timeout: float = 10.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _start(runner: AgentRunner) -> threading.Thread:
    thread = threading.Thread(target=runner.run, daemon=True)
    thread.start()
    return thread


# --- the client's calls ----------------------------------------------------------------------

def test_an_agent_claims_renews_and_completes_a_task(agent):
    queued = _queue(payload={"repo": "acme/api", "pr": 17}, attempt_timeout_s=30)
    _queue(kind="ticket.triage", required_capabilities=["ticket-triage"])  # not this agent's

    (claimed,) = agent.claim_tasks(limit=5)

    assert claimed["id"] == queued.pk and claimed["kind"] == "code.review" and claimed["attempt"] == 1
    assert claimed["payload"] == {"repo": "acme/api", "pr": 17} and claimed["attempt_timeout_s"] == 30
    assert claimed["resource_class"] == "cpu" and claimed["lease_expires_at"]
    assert _task(queued.pk).state == "leased"
    assert agent.renew_tasks([queued.pk]) == {"renewed": [queued.pk], "lost": []}
    assert _task(queued.pk).state == "running"

    done = agent.complete_task(queued.pk, {"verdict": "approve", "comments": 3})

    assert done["state"] == "succeeded"
    task = _task(queued.pk)
    assert task.state == "succeeded" and task.result == {"verdict": "approve", "comments": 3}
    assert _attempts(queued.pk) == [(1, "succeeded", "", "")]
    assert agent.claim_tasks() == []


def test_a_failure_is_retried_then_a_non_retryable_one_ends_the_task(agent):
    queued = _queue(max_attempts=3, backoff_base_s=0, backoff_max_s=0)
    agent.claim_tasks()

    again = agent.fail_task(queued.pk, "rate_limit", "429 from the provider")

    assert again["state"] == "queued" and "retry 2/3 after rate_limit" in again["wait_reason"]
    (second,) = agent.claim_tasks()
    assert second["attempt"] == 2
    agent.fail_task(queued.pk, "agent_error", "the diff does not apply", retryable=False)
    assert _task(queued.pk).state == "failed"
    assert _attempts(queued.pk) == [(1, "failed", "rate_limit", "429 from the provider"),
                                    (2, "failed", "agent_error", "the diff does not apply")]


def test_acting_on_a_task_no_longer_held_raises_task_lost_with_the_reason(agent, pulseguard_url, enrollment_key):
    from apps.workflows import services

    cancelled, expired, other = _queue(), _queue(attempt_timeout_s=1), _queue()
    agent.claim_tasks(limit=2)
    services.task_cancel(task_id=cancelled.pk)
    rival = Client(pulseguard_url, sleep=lambda s: None)
    rival.register(enrollment_key, "reviewer-02", capabilities=["code-review"], host={})
    assert [t["id"] for t in rival.claim_tasks()] == [other.pk]
    time.sleep(1.1)  # the 1 s lease runs out

    with pytest.raises(TaskLost) as finished:
        agent.complete_task(cancelled.pk, {})
    with pytest.raises(TaskLost) as late:
        agent.fail_task(expired.pk, "timeout", "too slow")
    with pytest.raises(TaskLost) as not_mine:
        agent.complete_task(other.pk, {})
    with pytest.raises(TaskLost) as unknown:
        agent.complete_task(999_999, {})

    assert (finished.value.code, finished.value.task_id) == ("already_finished", cancelled.pk)
    assert late.value.code == "lease_expired" and not_mine.value.code == "not_holder"
    assert unknown.value.code == "unknown_task" and unknown.value.status == 404
    assert agent.renew_tasks([cancelled.pk, expired.pk]) == {"renewed": [], "lost": sorted([cancelled.pk, expired.pk])}
    rival.close()


def test_a_claim_waits_for_work_and_is_woken_when_a_task_is_queued(agent):
    agent.timeout = 1.0  # the long poll's read timeout is wait + this, not this
    started = time.monotonic()
    assert agent.claim_tasks(wait=1.5) == []
    assert 1.4 < time.monotonic() - started < 4

    threading.Timer(0.5, _queue).start()
    started = time.monotonic()
    claimed = agent.claim_tasks(wait=10)

    assert len(claimed) == 1 and time.monotonic() - started < 5


def test_an_agent_heartbeat_renews_the_leases_it_names(agent):
    from apps.workflows import services

    held, cancelled = _queue(), _queue()
    agent.claim_tasks(limit=2)
    services.task_cancel(task_id=cancelled.pk)

    answer = agent.heartbeat("busy", task_ids=[held.pk, cancelled.pk])

    assert answer["tasks"] == {"renewed": [held.pk], "lost": [cancelled.pk]}


# --- the work loop ---------------------------------------------------------------------------

def test_a_runner_with_task_handlers_works_the_queue(agent):
    seen = []

    def review(payload):
        seen.append(payload["pr"])
        return {"verdict": "approve", "pr": payload["pr"]}

    runner = AgentRunner(agent, interval_s=0.2, telemetry=False, readings=None, task_handlers={"code.review": review},
                         task_wait_s=2)
    thread = _start(runner)
    tasks = [_queue(payload={"pr": n}) for n in (1, 2, 3)]
    try:
        _until(lambda: all(_task(t.pk).state == "succeeded" for t in tasks), what="three tasks to succeed")
    finally:
        runner.stop()
        thread.join(10)

    assert sorted(seen) == [1, 2, 3] and runner.worker.stats["succeeded"] == 3
    assert [_task(t.pk).result for t in tasks] == [{"verdict": "approve", "pr": n} for n in (1, 2, 3)]
    assert runner.worker.active == 0 and not thread.is_alive()


def test_tasks_run_concurrently_and_the_agent_reports_busy_meanwhile(agent):
    from apps.agents.models import Agent

    both = threading.Barrier(2, timeout=10)
    release = threading.Event()

    def work(kind, payload):
        both.wait()  # fails unless two handlers run at once
        release.wait(10)
        return {"kind": kind}

    runner = AgentRunner(agent, interval_s=0.1, telemetry=False, readings=None, task_handler=work, task_concurrency=2,
                         task_wait_s=2)
    thread = _start(runner)
    tasks = [_queue(), _queue()]
    try:
        _until(lambda: Agent.objects.get(pk=agent.agent_id).state == "busy", what="the agent to report busy")
        release.set()
        _until(lambda: all(_task(t.pk).state == "succeeded" for t in tasks), what="both tasks to succeed")
        _until(lambda: Agent.objects.get(pk=agent.agent_id).state == "idle", what="the agent to report idle")
    finally:
        release.set()
        runner.stop()
        thread.join(10)


def test_handler_exceptions_become_error_types(agent):
    def handler(kind, payload):
        raise {
            "timeout": TimeoutError("the model did not answer in 60 s"),
            "connection": ConnectionResetError("github.com reset the connection"),
            "rate_limit": TaskError("429 Too Many Requests", "rate_limit"),
            "rejected": TaskRejected("payload asks for a language this agent does not review"),
            "bug": KeyError("choices"),
        }[payload["case"]]

    runner = AgentRunner(agent, interval_s=0.2, telemetry=False, readings=None, task_handler=handler, task_wait_s=2,
                         task_concurrency=5)
    cases = ("timeout", "connection", "rate_limit", "rejected", "bug")
    tasks = {case: _queue(payload={"case": case}, max_attempts=1) for case in cases}
    thread = _start(runner)
    try:
        _until(lambda: all(_task(t.pk).state == "failed" for t in tasks.values()), what="five failures")
    finally:
        runner.stop()
        thread.join(10)

    kinds = {case: _attempts(t.pk)[0][2] for case, t in tasks.items()}
    assert kinds == {"timeout": "timeout", "connection": "connection", "rate_limit": "rate_limit",
                     "rejected": "rejected", "bug": "agent_error"}
    assert _attempts(tasks["bug"].pk)[0][3] == "KeyError: 'choices'"
    assert _attempts(tasks["rejected"].pk)[0][3] == "payload asks for a language this agent does not review"


def test_a_result_json_cannot_carry_fails_the_task_as_serialization(agent):
    runner = AgentRunner(agent, interval_s=0.2, telemetry=False, readings=None, task_wait_s=2,
                         task_handlers={"code.review": lambda payload: {"when": object()}})
    task = _queue()
    thread = _start(runner)
    try:
        _until(lambda: _task(task.pk).state == "failed", what="the task to fail")
    finally:
        runner.stop()
        thread.join(10)

    (attempt,) = _attempts(task.pk)
    assert attempt[1:3] == ("failed", "serialization") and "not JSON" in attempt[3]


def test_a_task_cancelled_while_it_runs_is_seen_lost_at_renewal_and_not_completed(agent):
    from apps.workflows import services

    started, stopped = threading.Event(), threading.Event()

    def slow(payload):
        from pulseguard_agent import current_task

        task = current_task()
        started.set()
        if task.wait(15):  # woken as soon as the task is lost
            stopped.set()
        return {"done": True}

    # Heartbeats far apart: the lease renewals (a third of the 3 s timeout) must notice.
    runner = AgentRunner(agent, interval_s=60, telemetry=False, readings=None, task_handlers={"code.review": slow},
                         task_wait_s=1)
    task = _queue(attempt_timeout_s=3)
    thread = _start(runner)
    try:
        assert started.wait(10)
        services.task_cancel(task_id=task.pk)
        assert stopped.wait(5), "the handler was not told its task was lost"
        _until(lambda: runner.worker.stats["lost"] == 1, what="the loss to be counted")
    finally:
        runner.stop()
        thread.join(10)

    assert _task(task.pk).state == "cancelled" and _task(task.pk).result is None
    assert _attempts(task.pk)[0][1] == "cancelled"
    assert runner.worker.stats["renewals"] >= 1 and runner.worker.stats["succeeded"] == 0


def test_a_drained_agent_finishes_its_task_and_claims_no_more(agent):
    from apps.agents import services as agent_services
    from apps.agents.models import Agent

    release = threading.Event()
    runner = AgentRunner(agent, interval_s=0.2, telemetry=False, readings=None, task_wait_s=1,
                         task_handlers={"code.review": lambda payload: release.wait(10) and {"ok": True}})
    first = _queue()
    thread = _start(runner)
    try:
        _until(lambda: _task(first.pk).state in ("leased", "running"), what="the first task to be claimed")
        agent_services.agent_command_issue(agent=Agent.objects.get(pk=agent.agent_id), type="drain")
        _until(lambda: Agent.objects.get(pk=agent.agent_id).state == "draining", what="the agent to report draining")
        second = _queue()
        release.set()
        _until(lambda: _task(first.pk).state == "succeeded", what="the running task to finish")
        time.sleep(1.5)  # longer than a claim's wait: it would have been claimed by now
        assert _task(second.pk).state == "queued"
        assert runner.state == "draining" and runner.worker.stats["claimed"] == 1
    finally:
        release.set()
        runner.stop()
        thread.join(10)


def test_stopping_lets_the_running_task_finish_before_the_goodbye(agent):
    from apps.agents.models import Agent

    started = threading.Event()

    def work(payload):
        started.set()
        time.sleep(1.0)
        return {"finished": True}

    runner = AgentRunner(agent, interval_s=0.2, telemetry=False, readings=None, task_wait_s=2,
                         task_handlers={"code.review": work})
    task = _queue()
    thread = _start(runner)
    assert started.wait(10)

    runner.stop()  # what SIGTERM does
    thread.join(10)

    assert not thread.is_alive()
    assert _task(task.pk).state == "succeeded" and _attempts(task.pk)[0][1] == "succeeded"
    assert Agent.objects.get(pk=agent.agent_id).status == "offline"  # the goodbye came after


# --- the simulator -----------------------------------------------------------------------------

def test_a_simulated_fleet_works_tasks_end_to_end(pulseguard_url, enrollment_key):
    from django.db import connection

    from apps.workflows.models import TaskAttempt
    from pulseguard_agent import SimTiming, Simulator

    timing = SimTiming(start_spread_s=0.05, stall_probability=0.0, task_time_scale=0.005, task_poll_s=(0.05, 0.1))
    sim = Simulator(pulseguard_url, enrollment_key, agents=8, prefix="work", fail_rate=0, silent_rate=0, interval=0.2,
                    metrics_interval=0.2, seed=5, timing=timing, tasks=True)
    retry = {"max_attempts": 3, "backoff_base_s": 0.05, "backoff_max_s": 0.1}
    tasks = [
        *(_queue("code.review", payload={"pr": n}, **retry) for n in range(4)),
        *(_queue("ticket.triage", required_capabilities=["ticket-triage"], payload={"ticket": n}, **retry)
          for n in range(4)),
        *(_queue("embed.batch", required_capabilities=["embeddings"], resources={"class": "gpu", "vram_mb": 8000},
                 payload={"documents": 800}, **retry) for _ in range(2)),
    ]
    doomed = _queue("ticket.triage", required_capabilities=["ticket-triage"], payload={"fail": True},
                    max_attempts=2, backoff_base_s=0.05, backoff_max_s=0.1)
    sim.start()
    try:
        _until(lambda: all(_task(t.pk).state in ("succeeded", "failed") for t in [*tasks, doomed]), timeout=30,
               what="every task to finish")
    finally:
        sim.stop()

    assert _task(doomed.pk).state == "failed"
    assert [a[1:3] for a in _attempts(doomed.pk)] == [("failed", "agent_error"), ("failed", "agent_error")]
    assert sum(_task(t.pk).state == "succeeded" for t in tasks) >= 8  # a retry or two may run out, rarely
    by_kind = {}
    for attempt in TaskAttempt.objects.filter(task__in=tasks).select_related("agent", "task"):
        by_kind.setdefault(attempt.task.kind, set()).add(attempt.agent.name.split("-")[1])
    assert by_kind == {"code.review": {"reviewer"}, "ticket.triage": {"support"}, "embed.batch": {"embedder"}}
    review = next(t for t in tasks if _task(t.pk).state == "succeeded" and t.kind == "code.review")
    assert {"verdict", "agent", "model", "seconds"} <= set(_task(review.pk).result)
    stats = sim.stats.snapshot()
    assert stats["tasks_succeeded"] >= 8 and stats["tasks_claimed"] >= 11, stats
    with connection.cursor() as cursor:  # the LLM calls of the work, tagged with the task
        cursor.execute("SELECT count(*) FROM metrics_llm_call WHERE task_id = %s", [str(review.pk)])
        assert cursor.fetchone()[0] >= 1


def test_sigterm_stops_the_cli_agent_after_its_running_task_finishes(pulseguard_url, enrollment_key, tmp_path):
    import os
    import signal
    import subprocess
    import sys

    from apps.agents.models import Agent
    from tests.live import ROOT

    (tmp_path / "handlers.py").write_text(
        "import time\n\ndef handle(kind, payload):\n    time.sleep(1.5)\n    return {'handled': kind}\n")
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}", "PULSEGUARD_URL": pulseguard_url,
           "PULSEGUARD_ENROLLMENT_KEY": enrollment_key, "PULSEGUARD_SPOOL_DIR": str(tmp_path / "spool")}
    task = _queue()
    agent = subprocess.Popen(
        [sys.executable, "-m", "pulseguard_agent", "run", "--name", "cli-worker", "--capability", "code-review",
         "--no-telemetry", "--interval", "0.5", "--task-handler", "handlers:handle"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        _until(lambda: _task(task.pk).state in ("leased", "running"), timeout=20, what="the CLI agent to claim")
        agent.send_signal(signal.SIGTERM)
        output, _ = agent.communicate(timeout=20)
    finally:
        if agent.poll() is None:
            agent.kill()

    assert agent.returncode == 0, output
    assert _task(task.pk).state == "succeeded" and _task(task.pk).result == {"handled": "code.review"}
    assert Agent.objects.get(name="cli-worker").status == "offline"
    assert "waiting up to 25s for 1 running task" in output
