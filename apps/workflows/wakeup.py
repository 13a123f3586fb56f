"""Wake agents that wait for work the moment there is some: PostgreSQL LISTEN/NOTIFY.

Services send `NOTIFY pulseguard_tasks` when a task becomes claimable (created, retried,
back from a lost lease). Each server process keeps one listening connection on its event
loop and wakes every waiting claim request, which then tries to claim again. A waiter
takes the current event *before* it tries to claim, so a notification arriving during
its attempt is never missed. If the listener cannot connect, waiters fall back to
re-checking every few seconds: slower, never stuck.
"""

from __future__ import annotations

import asyncio

import psycopg
import structlog
from django.db import connection

log = structlog.get_logger(__name__)

CHANNEL = "pulseguard_tasks"
FALLBACK_POLL_S = 5.0


def _conninfo() -> dict:
    s = connection.settings_dict
    params = {"dbname": s["NAME"], "user": s.get("USER") or None, "password": s.get("PASSWORD") or None,
              "host": s.get("HOST") or None, "port": s.get("PORT") or None}
    return {k: v for k, v in params.items() if v}


class Wakeup:
    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        self.event: asyncio.Event | None = None
        self.task: asyncio.Task | None = None
        self.listening = False

    def current(self) -> asyncio.Event:
        """The event the next notification will set (start listening on first use)."""
        loop = asyncio.get_running_loop()
        if self.loop is not loop:
            self.loop, self.event, self.listening = loop, asyncio.Event(), False
            self.task = loop.create_task(self._listen())
        return self.event

    async def wait(self, event: asyncio.Event, timeout: float) -> bool:
        """Wait for `event` (from current()) up to `timeout` s; True if it was set."""
        if not self.listening:
            timeout = min(timeout, FALLBACK_POLL_S)
        try:
            await asyncio.wait_for(event.wait(), timeout)
            return True
        except TimeoutError:
            return False

    def _fire(self) -> None:
        event, self.event = self.event, asyncio.Event()
        event.set()

    async def _listen(self) -> None:
        while True:
            try:
                conn = await psycopg.AsyncConnection.connect(**_conninfo(), autocommit=True)
                async with conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    self.listening = True
                    self._fire()  # anything queued while we were not listening
                    async for _ in conn.notifies():
                        self._fire()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("task_wakeup_listener_down", error=str(exc))
            self.listening = False
            await asyncio.sleep(FALLBACK_POLL_S)


wakeup = Wakeup()
