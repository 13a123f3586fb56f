"""The Celery application shared by workers, beat and the web process (which only publishes)."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "pulseguard.settings")

app = Celery("pulseguard")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

# Request ids follow the work into the tasks it starts (see pulseguard/logging.py).
from pulseguard import logging as _pg_logging  # noqa: E402

_pg_logging.connect_celery_signals()

# Each worker joins the fleet as an agent of kind "worker" (celery_worker/node.py).
from celery_worker import signals as _worker_signals  # noqa: E402

_worker_signals.connect()
