"""Task calls and the work loop over real HTTP against the contract server: retries, typed errors,
the long poll's timeout, classification of handler exceptions, stopping. test_sdk_tasks_e2e.py
runs the same against the real PulseGuard server."""

from __future__ import annotations

import threading
import time

import pytest

from pulseguard_agent import (
    AgentRunner, Client, PulseGuardError, ServerUnavailable, TaskError, TaskLost, TaskRejected, TaskWorker,
    TelemetryBuffer, current_task,
)
from pulseguard_agent.worker import classify


def _registered(server, name="worker-01", **client_args) -> Client:
    client = Client(server.url, sleep=lambda s: None, **client_args)
    client.register(server.key, name, host={})
    return client


def _until(check, timeout: float = 5.0):
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.01)


# --- the client ----------------------------------------------------------------------------

def test_a_long_poll_gets_a_read_timeout_longer_than_its_wait(server):
    client = _registered(server, timeout=0.3)
    server.script("claim", 200, {"tasks": []}, delay=0.8)  # longer than the client's timeout

    assert client.claim_tasks(limit=2, wait=1) == []

    assert server.to("claim")[0].body == {"limit": 2, "wait": 1.0}
    server.script("heartbeat", 200, {"commands": []}, delay=0.8)
    with pytest.raises(ServerUnavailable):  # other calls keep the short timeout
        client.heartbeat(attempts=1)


def test_task_calls_retry_transient_failures(server, sleeps):
    client = Client(server.url, sleep=sleeps)
    client.register(server.key, "worker-01", host={})
    task_id = server.queue_task()
    server.script("claim", 503, {"error": {"code": "unavailable", "message": "restarting"}})
    (claimed,) = client.claim_tasks()
    server.script("renew", 429, {"error": {"code": "throttled", "message": "slow down"}}, headers={"Retry-After": "2"})

    assert client.renew_tasks([task_id]) == {"renewed": [task_id], "lost": []}
    assert client.complete_task(task_id, {"ok": True})["state"] == "succeeded"

    assert claimed["id"] == task_id and sleeps[1] == 2.0 and len(sleeps) == 2
    assert server.finished[task_id] == ("complete", {"ok": True})


def test_holder_conflicts_raise_task_lost_and_other_refusals_do_not(server):
    client = _registered(server)
    task_id = server.queue_task()
    client.claim_tasks()
    server.cancel_task(task_id)

    with pytest.raises(TaskLost) as lost:
        client.fail_task(task_id, "timeout", "gave up")
    with pytest.raises(TaskLost) as not_mine:
        client.complete_task(task_id + 100, {})
    server.script("complete", 409, {"error": {"code": "conflict", "message": "something else"}})
    with pytest.raises(PulseGuardError) as other:
        client.complete_task(task_id, {})

    assert (lost.value.code, lost.value.task_id, lost.value.status) == ("already_finished", task_id, 409)
    assert not_mine.value.code == "not_holder"
    assert not isinstance(other.value, TaskLost) and other.value.code == "conflict"


def test_bad_arguments_are_refused_before_anything_is_sent(server):
    client = _registered(server)

    with pytest.raises(ValueError, match="error_type"):
        client.fail_task(1, "exploded")
    with pytest.raises(TypeError):
        client.complete_task(1, {"when": object()})
    with pytest.raises(ValueError, match="limit"):
        client.claim_tasks(limit=0)
    with pytest.raises(ValueError, match="wait"):
        client.claim_tasks(wait=31)
    assert client.renew_tasks([]) == {"renewed": [], "lost": []}
    assert server.to("complete") == server.to("fail") == server.to("claim") == server.to("renew") == []


def test_fail_sends_the_classification_and_a_bounded_message(server):
    client = _registered(server)
    task_id = server.queue_task()
    client.claim_tasks()

    client.fail_task(task_id, "rejected", "x" * 5000, retryable=False)

    body = server.to("fail")[0].body
    assert body["error_type"] == "rejected" and body["retryable"] is False and len(body["message"]) == 4000


# --- classification ------------------------------------------------------------------------

class RateLimitError(Exception):  # shaped like openai.RateLimitError / anthropic.RateLimitError
    pass


class SkillError(Exception):  # shaped like apps.workflows.skills.SkillError
    def __init__(self, message, error_type):
        super().__init__(message)
        self.error_type = error_type


@pytest.mark.parametrize(("exc", "expected"), [
    (TimeoutError("no answer"), ("timeout", True)),
    (ConnectionRefusedError("refused"), ("connection", True)),
    (MemoryError(), ("resource", True)),
    (RateLimitError("429"), ("rate_limit", True)),
    (SkillError("bad input", "serialization"), ("serialization", True)),
    (TaskError("quota", "rate_limit", retryable=False), ("rate_limit", False)),
    (TaskRejected("unsupported language"), ("rejected", False)),
    (KeyError("choices"), ("agent_error", True)),
])
def test_handler_exceptions_are_classified(exc, expected):
    assert classify(exc) == expected


def test_a_task_error_needs_a_known_error_type():
    with pytest.raises(ValueError):
        TaskError("boom", "kaboom")


# --- the worker ----------------------------------------------------------------------------

def test_a_worker_runs_tasks_and_tags_llm_calls_with_the_task(server):
    client = _registered(server)
    buffer = TelemetryBuffer()
    loads = []

    def handler(task):
        assert current_task() is task
        buffer.record_llm_call("openai", "gpt-4o-mini", tokens_in=10, latency_ms=300)
        return {"kind": task.kind, "n": task.payload["n"]}

    worker = TaskWorker(client, handler, wait_s=0.2, on_load=loads.append)
    ids = [server.queue_task(payload={"n": n}) for n in range(3)]
    worker.start()
    try:
        _until(lambda: len(server.finished) == 3)
    finally:
        worker.stop(timeout=2)

    assert [server.finished[i] for i in ids] == [("complete", {"kind": "code.review", "n": n}) for n in range(3)]
    assert [s["task_id"] for s in buffer.take()] == [str(i) for i in ids]
    assert loads[-1] == 0 and max(loads) == 1 and worker.stats["succeeded"] == 3
    assert current_task() is None


def test_stopping_cuts_a_waiting_claim_short(server):
    client = _registered(server)
    worker = TaskWorker(client, lambda task: {}, wait_s=20)
    worker.start()
    server.wait_for("register")
    time.sleep(0.2)  # the claim is waiting for work now

    started = time.monotonic()
    worker.stop(timeout=0)

    assert time.monotonic() - started < 2.5


def test_a_task_lost_at_renewal_is_not_reported(server):
    client = _registered(server)
    lost = threading.Event()

    def handler(task):
        if task.wait(5):
            lost.set()
        return {"late": True}

    worker = TaskWorker(client, handler, wait_s=0.2)
    task_id = server.queue_task(attempt_timeout_s=0.3)  # renewed every 0.1 s
    worker.start()
    try:
        _until(lambda: worker.active == 1)
        server.cancel_task(task_id)
        assert lost.wait(3)
        _until(lambda: worker.active == 0)
    finally:
        worker.stop(timeout=1)

    assert server.finished[task_id] == ("cancelled",) and server.to("complete") == []
    assert worker.stats["lost"] == 1 and worker.stats["renewals"] >= 1


def test_a_runner_names_its_tasks_in_heartbeats_and_stops_claiming_while_isolated(server):
    client = _registered(server)
    release = threading.Event()
    runner = AgentRunner(client, interval_s=0.05, telemetry=False, readings=None, task_wait_s=0.1,
                         task_handler=lambda kind, payload: release.wait(5) and {"done": kind})
    task_id = server.queue_task()
    thread = threading.Thread(target=runner.run, daemon=True)
    thread.start()
    try:
        _until(lambda: any(h.body.get("task_ids") == [task_id] for h in server.to("heartbeat")))
        assert any(h.body["state"] == "busy" for h in server.to("heartbeat"))
        server.queue_command(client.agent_id, "isolate")
        _until(lambda: runner.isolated)
        claims = len(server.to("claim"))
        release.set()
        _until(lambda: task_id in server.finished)
        time.sleep(0.4)
        assert len(server.to("claim")) <= claims + 1  # at most the one already waiting
    finally:
        release.set()
        runner.stop()
        thread.join(5)

    assert server.finished[task_id] == ("complete", {"done": "code.review"})


def test_a_kind_without_a_handler_fails_for_another_agent_to_take(server):
    client = _registered(server)
    runner = AgentRunner(client, interval_s=0.05, telemetry=False, readings=None, task_wait_s=0.1,
                         task_handlers={"code.review": lambda payload: {}})
    task_id = server.queue_task(kind="ticket.triage")
    thread = threading.Thread(target=runner.run, daemon=True)
    thread.start()
    try:
        _until(lambda: task_id in server.finished)
    finally:
        runner.stop()
        thread.join(5)

    outcome, body = server.finished[task_id]
    assert outcome == "fail" and body["error_type"] == "agent_error" and body["retryable"] is True
    assert "no handler for tasks of kind 'ticket.triage'" in body["message"]
