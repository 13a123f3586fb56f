"""The one way services publish live updates: a group_send on the Redis channel layer.

Called from `transaction.on_commit` so browsers never see a change that rolled back.
A Redis hiccup is logged and swallowed: the database write already happened and a
missed frame is repaired by the next one, so it must not fail an agent's request.
"""

import structlog
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction

log = structlog.get_logger(__name__)


def publish(group: str, message: dict) -> None:
    try:
        async_to_sync(get_channel_layer().group_send)(group, message)
    except Exception:
        log.warning("live_publish_failed", group=group, type=message.get("type"), exc_info=True)


def publish_on_commit(group: str, message: dict) -> None:
    transaction.on_commit(lambda: publish(group, message))
