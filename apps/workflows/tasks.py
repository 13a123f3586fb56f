"""Celery entry points of the task layer: thin wrappers over services."""

from celery import shared_task

from apps.workflows import services


@shared_task(ignore_result=True)
def tasks_expire():
    """Lost leases back to the queue, timeouts applied (beat, every PULSEGUARD_TASK_EXPIRE_EVERY s)."""
    return services.tasks_expire()


@shared_task(ignore_result=True)
def tasks_dispatch():
    """Send queued Celery-run tasks to their queues (beat, and after creates)."""
    from apps.workflows.dispatch import tasks_dispatch as dispatch

    return dispatch()


@shared_task(bind=True, ignore_result=True, acks_late=True, reject_on_worker_lost=True)
def task_run(self, task_id: int, token: str):
    """Run one dispatched task on this worker (one attempt). The soft time limit is the
    task's attempt timeout, set when the message is sent."""
    from apps.workflows.dispatch import task_run_on_worker

    return task_run_on_worker(task_id=task_id, token=token, worker_name=self.request.hostname)
