"""Celery-run tasks: dispatch to the cpu queue or a GPU's own queue, and the run itself.

Dispatch (beat every few seconds, and right after a task is created) takes queued Celery
tasks best first, places GPU tasks on a device (placement.py) and sends each to its
queue with a fresh dispatch token. A worker starts a task only if the token still
matches a queued task (a conditional UPDATE): a message delivered twice, or one for a
task that was cancelled or re-dispatched meanwhile, starts nothing. A dispatched task no
worker starts within its attempt timeout is dispatched again (tasks_expire).

On the worker, the run is one attempt like an agent's: complete, fail (classified), or
time out at attempt_timeout_s (Celery's soft time limit), with the GPU pinned through
CUDA_VISIBLE_DEVICES.
"""

from __future__ import annotations

import os
import uuid
from contextlib import contextmanager
from datetime import timedelta

import structlog
from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from apps.agents.models import Agent
from apps.workflows import events, placement, services
from apps.workflows.choices import ErrorType, Runner, TaskState
from apps.workflows.models import Task, TaskAttempt
from apps.workflows.skills import SkillError, skill_get

log = structlog.get_logger(__name__)


def tasks_dispatch(*, limit: int = 200) -> dict[str, int]:
    """Send queued Celery tasks to their queues; returns counts (dispatched, waiting)."""
    from apps.workflows.controls import dispatch_paused
    from apps.workflows.tasks import task_run

    if dispatch_paused():
        return {"dispatched": 0, "waiting": 0}
    now = timezone.now()
    sent: list[tuple[int, str, str, int]] = []
    waiting = 0
    with transaction.atomic():
        tasks = list(
            Task.objects.select_for_update(skip_locked=True)
            .filter(state=TaskState.QUEUED, runner=Runner.CELERY, dispatched_at__isnull=True)
            .filter(Q(not_before__isnull=True) | Q(not_before__lte=now))
            .order_by("-priority", "id")[:limit]
        )
        if not tasks:
            return {"dispatched": 0, "waiting": 0}
        devices = placement.gpu_devices() if any(t.resource_class == "gpu" for t in tasks) else []
        for task in tasks:
            fields = ["dispatched_at", "dispatch_token", "queue", "wait_reason"]
            if task.resource_class == "gpu":
                device = placement.place(devices, task.vram_mb or 0)
                if device is None:
                    reason = placement.why_not(devices, task.vram_mb or 0)
                    if task.wait_reason != reason:
                        task.wait_reason = reason
                        task.save(update_fields=["wait_reason"])
                    waiting += 1
                    continue
                task.queue, task.gpu_node, task.gpu_index = device.queue, device.node, device.index
                fields += ["gpu_node", "gpu_index"]
            else:
                task.queue = settings.PULSEGUARD_CPU_QUEUE
            task.dispatched_at, task.dispatch_token = now, uuid.uuid4()
            task.wait_reason = f"sent to queue {task.queue}, waiting for a worker"
            task.save(update_fields=fields)
            sent.append((task.pk, str(task.dispatch_token), task.queue, task.attempt_timeout_s))

        def publish():
            for task_id, token, queue, timeout_s in sent:
                # The attempt timeout is Celery's soft limit: the skill gets an exception
                # it can clean up after; the hard limit kills a skill that ignores it.
                task_run.apply_async(args=[task_id, token], queue=queue,
                                     soft_time_limit=timeout_s, time_limit=timeout_s + 30)

        transaction.on_commit(publish)
        events.tasks_changed([task_id for task_id, *_ in sent])
    if sent:
        log.info("tasks_dispatched", count=len(sent), waiting=waiting)
    return {"dispatched": len(sent), "waiting": waiting}


_START_SQL_FIELDS = ("state", "agent", "lease_expires_at", "started_at", "dispatched_at", "wait_reason")


@transaction.atomic
def task_start_dispatched(*, task_id: int, token: str, worker: Agent) -> Task | None:
    """The worker takes the task it was sent, if it is still the one that was sent.

    While dispatch is paused, a message sent before the pause starts nothing: the task
    goes back to be dispatched again after the resume.
    """
    from apps.workflows.controls import dispatch_paused

    now = timezone.now()
    task = (Task.objects.select_for_update()
            .filter(pk=task_id, state=TaskState.QUEUED, dispatch_token=token).first())
    if task is None:
        return None
    if dispatch_paused():
        task.dispatched_at = task.dispatch_token = None
        task.wait_reason = "dispatch is paused; it will be sent again on resume"
        task.save(update_fields=["dispatched_at", "dispatch_token", "wait_reason"])
        return None
    number = (TaskAttempt.objects.filter(task=task).order_by("-number").values_list("number", flat=True).first() or 0) + 1
    task.state, task.agent = TaskState.RUNNING, worker
    task.lease_expires_at = now + timedelta(seconds=task.attempt_timeout_s)
    task.started_at = task.started_at or now
    task.dispatched_at, task.wait_reason = None, ""
    task.save(update_fields=list(_START_SQL_FIELDS))
    TaskAttempt.objects.create(task=task, number=number, agent=worker, started_at=now)
    events.tasks_changed([task.pk])
    return task


def classify(exc: BaseException) -> str:
    """An exception's failure class (docs/coordination.md)."""
    from celery.exceptions import SoftTimeLimitExceeded

    if isinstance(exc, SkillError):
        return exc.error_type
    if isinstance(exc, (SoftTimeLimitExceeded, TimeoutError)):
        return ErrorType.TIMEOUT
    if isinstance(exc, (ConnectionError, OSError)):
        return ErrorType.CONNECTION
    if isinstance(exc, (TypeError, ValueError, UnicodeError)):
        return ErrorType.SERIALIZATION
    if isinstance(exc, MemoryError):
        return ErrorType.RESOURCE
    return ErrorType.AGENT_ERROR


@contextmanager
def pinned_gpu(index: int | None):
    """Make only the chosen GPU visible to the skill (libraries read this at CUDA init)."""
    if index is None:
        yield
        return
    before = os.environ.get("CUDA_VISIBLE_DEVICES")
    os.environ["CUDA_VISIBLE_DEVICES"] = str(index)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("CUDA_VISIBLE_DEVICES", None)
        else:
            os.environ["CUDA_VISIBLE_DEVICES"] = before


def task_run_on_worker(*, task_id: int, token: str, worker_name: str) -> str:
    """Run one dispatched task in this worker; returns what happened (for the log)."""
    worker = Agent.objects.filter(name=worker_name, kind="worker").first()
    if worker is None:
        # The worker has not registered (yet): leave the task for a registered one.
        log.warning("task_run_unknown_worker", task_id=task_id, worker=worker_name)
        return "unknown worker"
    task = task_start_dispatched(task_id=task_id, token=token, worker=worker)
    if task is None:
        return "not ours any more"
    skill = skill_get(task.kind)
    try:
        if skill is None:
            raise SkillError(f"no skill {task.kind!r} on this worker", ErrorType.REJECTED)
        with pinned_gpu(task.gpu_index):
            result = skill.fn(task.payload)
    except BaseException as exc:  # noqa: BLE001 - every failure is an attempt outcome
        error_type = classify(exc)
        try:
            services.task_fail(agent=worker, task_id=task.pk, error_type=error_type, message=f"{type(exc).__name__}: {exc}")
        except Exception:
            log.warning("task_fail_not_recorded", task_id=task.pk, exc_info=True)
        if not isinstance(exc, Exception):
            raise  # KeyboardInterrupt, SystemExit: after recording the attempt
        return f"failed: {error_type}"
    try:
        services.task_complete(agent=worker, task_id=task.pk, result=result if isinstance(result, dict) else {"value": result})
    except Exception:
        log.warning("task_complete_not_recorded", task_id=task.pk, exc_info=True)
        return "finished after its lease"
    return "succeeded"
