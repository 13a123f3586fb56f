from celery import shared_task

from apps.agents import services


@shared_task(ignore_result=True)
def agents_check_heartbeats() -> int:
    """Beat entry point: move silent agents to late/stale (see the service)."""
    return len(services.agents_check_heartbeats())
