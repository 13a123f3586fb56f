"""The live socket: pushes HTML partials that htmx swaps in place (hx-swap-oob).

Events carry agent ids only. Each socket collects the ids it hears about and renders
them at most once per PULSEGUARD_LIVE_COALESCE_MS, so a browser gets a few frames a
second however many agents change, and a burst on one agent costs one render.
The reader's role is checked on connect and again before every frame.

Five kinds of page listen: the fleet page (`/ws/live/`), one agent's page
(`?agent=<id>`) and the fleet GPU page (`?page=gpus`) follow agent events; the task list
(`?page=tasks`) and one task's page (`?task=<id>`) follow task events (ids too).
"""

import asyncio
import time
from urllib.parse import parse_qs
from uuid import UUID

import structlog
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings
from django.contrib.auth import get_user_model

from apps.agents.events import FLEET_GROUP
from apps.workflows.events import TASKS_GROUP
from apps.dashboard import render
from apps.security.roles import Role, user_has_role

log = structlog.get_logger(__name__)

CLOSE_FORBIDDEN = 4403


class LiveConsumer(AsyncWebsocketConsumer):
    async def connect(self):
        self.user = self.scope.get("user")
        if not await database_sync_to_async(_may_view)(self.user):
            await self.close(code=CLOSE_FORBIDDEN)
            return
        query = parse_qs(self.scope.get("query_string", b"").decode())
        self.agent_id = _uuid_or_none((query.get("agent") or [None])[0])
        self.task_id = _int_or_none((query.get("task") or [None])[0])
        page = (query.get("page") or [None])[0]
        if self.agent_id is not None:
            self.page = "agent"
        elif self.task_id is not None:
            self.page = "task"
        else:
            self.page = page if page in ("gpus", "tasks") else "fleet"
        self.group = TASKS_GROUP if self.page in ("tasks", "task") else FLEET_GROUP
        self.pending: set[str] = set()
        self.refresh_list = False
        self.flush_task: asyncio.Task | None = None
        self.last_flush = 0.0
        self.coalesce_s = settings.PULSEGUARD_LIVE_COALESCE_MS / 1000
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()

    async def disconnect(self, code):
        if getattr(self, "flush_task", None):
            self.flush_task.cancel()
        if hasattr(self, "pending"):
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def receive(self, text_data=None, bytes_data=None):
        # The socket is push-only; anything a browser sends is ignored.
        return

    async def agents_changed(self, event):
        ids = event["ids"]
        if self.agent_id is not None:
            if self.agent_id not in ids:
                return
            ids = [self.agent_id]
        self._queue(ids, event.get("added", False))

    async def tasks_changed(self, event):
        ids = event["ids"]
        if self.task_id is not None:
            if self.task_id not in ids:
                return
            ids = [self.task_id]
        self._queue(ids, event.get("added", False))

    def _queue(self, ids, added: bool) -> None:
        self.pending.update(ids)
        self.refresh_list = self.refresh_list or added
        if self.flush_task is None:
            self.flush_task = asyncio.create_task(self._flush_soon())

    async def _flush_soon(self):
        try:
            delay = self.last_flush + self.coalesce_s - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            ids, self.pending = self.pending, set()
            refresh, self.refresh_list = self.refresh_list, False
            self.last_flush = time.monotonic()
            html = await database_sync_to_async(self._render)(ids, refresh)
            if html is None:
                await self.close(code=CLOSE_FORBIDDEN)
            elif html:
                await self.send(text_data=html)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # A page that navigates away while its frame is being sent (uvicorn says
            # ClientDisconnected) is normal traffic, not an error worth a traceback.
            if type(exc).__name__ == "ClientDisconnected":
                log.debug("live_client_gone")
            else:
                log.exception("live_flush_failed")
        finally:
            self.flush_task = None
            if self.pending:
                self.flush_task = asyncio.create_task(self._flush_soon())

    def _render(self, ids, refresh):
        # Re-read the user: a role taken away or an account disabled ends the stream.
        user = get_user_model().objects.filter(pk=self.user.pk, is_active=True).first()
        if user is None or not _may_view(user):
            return None
        if self.agent_id is not None:
            return render.agent_frame(agent_id=self.agent_id, user=user)
        if self.task_id is not None:
            return render.task_frame(task_id=self.task_id, user=user)
        if self.page == "tasks":
            return render.tasks_frame(task_ids=ids, refresh_list=refresh, user=user)
        if self.page == "gpus":
            return render.gpu_frame(agent_ids=ids, refresh_list=refresh, user=user)
        return render.fleet_frame(agent_ids=ids, refresh_list=refresh, user=user)


def _may_view(user) -> bool:
    return user_has_role(user, Role.VIEWER)


def _uuid_or_none(value):
    try:
        return str(UUID(value)) if value else None
    except ValueError:
        return None


def _int_or_none(value):
    try:
        return int(value) if value else None
    except ValueError:
        return None
