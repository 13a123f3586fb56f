"""Celery-run tasks: placement on GPUs by free memory, and real workers running skills."""

import signal
import subprocess
import sys
import time
import uuid

import pytest

from apps.agents import services as agent_services
from apps.workflows import dispatch, placement, services
from apps.workflows.models import Task, TaskAttempt
from tests.live import server_env

GiB = 2**30


def _gpu_worker(name, gpus):
    agent, token = agent_services.agent_register_worker(
        name=name, host={"hostname": name, "gpus": [{"index": i, "name": "NVIDIA H100", "memory_total_bytes": 80 * GiB}
                                                    for i in range(len(gpus))]},
        capabilities=[], version="test")
    agent_services.agent_heartbeat_record(agent_id=agent.pk, token=token, state="busy", readings={"gpus": [
        {"index": i, "memory_total_bytes": 80 * GiB, "memory_used_bytes": used * GiB, "utilization_percent": util}
        for i, (used, util) in enumerate(gpus)]})
    return agent


@pytest.mark.django_db
def test_gpu_tasks_go_to_the_least_loaded_device_with_room_and_wait_with_a_reason():
    _gpu_worker("celery@gpu-a", [(70, 95.0), (10, 40.0)])  # GPU 1: 70 GiB free, 40 % busy
    _gpu_worker("celery@gpu-b", [(20, 10.0)])              # GPU 0: 60 GiB free, 10 % busy
    first = services.task_create(kind="gpu.probe", payload={})[0]
    big = services.task_create(kind="model.train", runner="agent", resources={"vram_mb": 50_000})[0]
    assert big.runner == "agent"  # agents claim it; only Celery tasks are dispatched
    train = [services.task_create(kind="gpu.probe", resources={"class": "gpu", "vram_mb": 50_000})[0] for _ in range(3)]
    counts = dispatch.tasks_dispatch()
    assert counts == {"dispatched": 3, "waiting": 1}
    placed = {t.pk: (t.gpu_node, t.gpu_index, t.queue) for t in Task.objects.filter(dispatched_at__isnull=False)}
    assert placed[first.pk] == ("celery@gpu-b", 0, "gpu.celery@gpu-b.0")  # least loaded
    # 50 GB tasks: one fits on gpu-b/0 (60 GiB free minus the probe's 256 MiB), one on gpu-a/1;
    # the third finds no device with room and says why.
    assert sorted(placed[t.pk][:2] for t in train[:2]) == [("celery@gpu-a", 1), ("celery@gpu-b", 0)]
    waiting = Task.objects.get(pk=train[2].pk)
    assert waiting.dispatched_at is None and "50000 MiB free" in waiting.wait_reason
    # Memory promised to placed tasks counts against the device until they finish.
    devices = {(d.node, d.index): d.free_mb for d in placement.gpu_devices()}
    assert devices[("celery@gpu-b", 0)] < 61_440 - 50_000


@pytest.mark.django_db
def test_a_cpu_task_is_sent_to_the_cpu_queue_and_started_once():
    task = services.task_create(kind="demo.echo", payload={"message": "hi"})[0]
    dispatch.tasks_dispatch()
    task.refresh_from_db()
    assert task.queue == "cpu" and task.dispatch_token
    worker, _ = agent_services.agent_register_worker(name="celery@cpu-1", host={}, capabilities=[], version="t")
    assert dispatch.task_start_dispatched(task_id=task.pk, token=str(task.dispatch_token), worker=worker)
    # The same message delivered again starts nothing.
    assert dispatch.task_start_dispatched(task_id=task.pk, token=str(task.dispatch_token), worker=worker) is None


# --- a real worker ---------------------------------------------------------------------------

def _wait(predicate, *, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def cpu_worker(settings):
    # A queue of our own: other test runs sharing this Redis never take our messages.
    queue = f"cpu-test-{uuid.uuid4().hex[:8]}"
    settings.PULSEGUARD_CPU_QUEUE = queue
    node = f"runner-{uuid.uuid4().hex[:8]}@pulseguard"
    proc = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "pulseguard", "worker", "-Q", queue, "-c", "2", "-n", node,
         "-l", "WARNING", "--without-mingle", "--without-gossip"],
        env=server_env(PULSEGUARD_HEARTBEAT_INTERVAL=1, PULSEGUARD_STALE_AFTER=10, PULSEGUARD_CPU_QUEUE=queue),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    from apps.agents.models import Agent

    _wait(lambda: Agent.objects.filter(name=node, status="online").exists(), timeout=60, what="the worker to register")
    yield node, proc
    if proc.poll() is None:
        proc.kill()
    proc.wait(10)


@pytest.mark.django_db(transaction=True)
def test_a_real_worker_runs_skills_retries_failures_and_a_killed_worker_loses_no_task(cpu_worker):
    node, proc = cpu_worker
    ok = services.task_create(kind="demo.echo", payload={"message": "hello"})[0]
    bad = services.task_create(kind="demo.echo", payload={"fail": True}, max_attempts=2, backoff_base_s=0)[0]
    long = services.task_create(kind="demo.sleep", payload={"seconds": 60}, attempt_timeout_s=5, backoff_base_s=0)[0]

    def settled(task_id, states):
        dispatch.tasks_dispatch()
        return Task.objects.filter(pk=task_id, state__in=states).first()

    done = _wait(lambda: settled(ok.pk, ["succeeded"]), timeout=30, what="the echo task")
    assert done.result["echo"] == "hello" and done.agent.name == node
    failed = _wait(lambda: settled(bad.pk, ["failed"]), timeout=30, what="the failing task to use its attempts")
    assert list(TaskAttempt.objects.filter(task=failed).values_list("outcome", "error_type")) == [
        ("failed", "agent_error"), ("failed", "agent_error")]

    _wait(lambda: settled(long.pk, ["running"]), timeout=30, what="the long task to start")
    proc.send_signal(signal.SIGKILL)  # the worker dies mid-task
    proc.wait(10)
    # Its lease runs out; the task goes back to the queue for another worker.
    _wait(lambda: services.tasks_expire()["lease_lost"] or None, timeout=20, what="the lease to be reclaimed")
    long.refresh_from_db()
    assert long.state == "queued" and long.error_type == "lease_lost"
    assert TaskAttempt.objects.get(task=long).outcome == "lease_lost"
    services.task_cancel(task_id=long.pk)
