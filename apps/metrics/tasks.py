"""Celery entry points of the metrics app: thin wrappers over services."""

from celery import shared_task

from apps.metrics import services


@shared_task(ignore_result=True)
def metrics_rollup():
    """Roll up the minutes that received samples (beat, every PULSEGUARD_ROLLUP_EVERY s)."""
    return services.metrics_rollup()


@shared_task(ignore_result=True)
def metrics_partitions_maintain():
    """Partitions ahead of time and retention by dropping whole partitions (beat, hourly)."""
    return services.metrics_partitions_maintain()
