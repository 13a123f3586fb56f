"""A real Celery worker (subprocess, real Redis broker, the test database) joins the fleet."""

import signal
import subprocess
import sys
import time
import uuid

import pytest

from apps.agents import services
from apps.agents.choices import CommandType
from apps.agents.models import Agent, AgentCommand
from pulseguard.celery import app as celery_app
from tests.live import server_env

pytestmark = pytest.mark.django_db(transaction=True)


def _wait(predicate, *, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def worker():
    node = f"test-{uuid.uuid4().hex[:8]}@pulseguard"
    proc = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "pulseguard", "worker", "-Q", "cpu", "-c", "1",
         "-n", node, "-l", "WARNING", "--without-mingle", "--without-gossip"],
        env=server_env(PULSEGUARD_HEARTBEAT_INTERVAL=1, PULSEGUARD_STALE_AFTER=10),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    yield node, proc
    if proc.poll() is None:
        proc.kill()
    proc.wait(10)


def _active_queues(node) -> list[str] | None:
    reply = celery_app.control.inspect(destination=[node], timeout=1).active_queues() or {}
    return [q["name"] for q in reply[node]] if node in reply else None


def test_a_celery_worker_registers_heartbeats_obeys_drain_and_says_goodbye(worker, operator):
    node, proc = worker
    agent = _wait(lambda: Agent.objects.filter(name=node).first(), timeout=30, what="the worker to register")
    assert agent.kind == "worker" and agent.capabilities == ["queue:cpu"]
    assert agent.host["hostname"] and agent.host["cpu_count"] >= 1

    first = agent.last_heartbeat_at
    _wait(lambda: Agent.objects.get(pk=agent.pk).last_heartbeat_at > first, timeout=10, what="a heartbeat")
    assert Agent.objects.get(pk=agent.pk).readings.get("cpu_percent") is not None
    assert _wait(lambda: _active_queues(node), timeout=10, what="queues") == ["cpu"]

    command = services.agent_command_issue(agent=agent, type=CommandType.DRAIN, actor=operator)
    done = _wait(lambda: AgentCommand.objects.filter(pk=command.pk, status="done").first(), timeout=10, what="the ack")
    assert "stopped consuming cpu" in done.result
    assert _wait(lambda: _active_queues(node) == [], timeout=10, what="the queue to be cancelled")
    _wait(lambda: Agent.objects.get(pk=agent.pk).state == "draining", timeout=10, what="draining state")

    services.agent_command_issue(agent=agent, type=CommandType.RELEASE, actor=operator)
    assert _wait(lambda: _active_queues(node) == ["cpu"], timeout=10, what="the queue to come back")

    proc.send_signal(signal.SIGTERM)
    proc.wait(30)
    assert Agent.objects.get(pk=agent.pk).status == "offline"
