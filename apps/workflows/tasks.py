"""Celery entry points of the task layer: thin wrappers over services."""

from celery import shared_task

from apps.workflows import services


@shared_task(ignore_result=True)
def tasks_expire():
    """Lost leases back to the queue, timeouts applied (beat, every PULSEGUARD_TASK_EXPIRE_EVERY s)."""
    return services.tasks_expire()
