"""Group commit: many concurrent requests, one database write.

Requests hand their item to `GroupCommit.submit()` on the event loop and await their own
result. Items that arrive within `max_wait_s` of each other (up to `max_batch`) are
written by one call of `write_many` on a worker thread, so a fleet heartbeating at
thousands per second costs PostgreSQL a few hundred statements and commits per second.
Nothing is answered before its batch has committed: durability is the same as one
transaction per request.

If a batch fails as a whole, its items are retried one by one, so one poisoned item
fails alone and the others still get their answer.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Hashable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import structlog

log = structlog.get_logger(__name__)


class GroupCommit:
    def __init__(
        self,
        write_many: Callable[[list[Any]], list[Any]],
        *,
        key: Callable[[Any], Hashable],
        max_batch: int = 200,
        max_wait_s: float = 0.002,
        threads: int = 4,
        name: str = "group-commit",
    ) -> None:
        self.write_many = write_many
        self.key = key
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix=name)
        self._pending: list[tuple[Any, asyncio.Future]] = []
        self._timer: asyncio.TimerHandle | None = None

    async def submit(self, item: Any) -> Any:
        """Queue `item` for the next batch and wait for its own result."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._pending.append((item, future))
        if len(self._pending) >= self.max_batch:
            self._flush()
        elif self._timer is None:
            self._timer = loop.call_later(self.max_wait_s, self._flush)
        return await future

    def on_every_thread(self, fn: Callable[[], None], *, timeout: float = 10) -> None:
        """Run `fn` once on each live worker thread (e.g. to close its database connection)."""
        threads = len(self.executor._threads)  # ThreadPoolExecutor starts threads lazily
        if not threads:
            return
        # Each job waits for the others, so no thread can take two of them.
        barrier = threading.Barrier(threads, timeout=timeout)

        def job():
            fn()
            barrier.wait()

        for future in [self.executor.submit(job) for _ in range(threads)]:
            future.result(timeout)

    def _flush(self) -> None:
        loop = asyncio.get_running_loop()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        pending, self._pending = self._pending, []
        # The same key twice (an agent that retried) waits for the next batch: a batch
        # writes each row once.
        batch, seen = [], set()
        for entry in pending:
            k = self.key(entry[0])
            if k in seen or len(batch) >= self.max_batch:
                self._pending.append(entry)
            else:
                seen.add(k)
                batch.append(entry)
        if self._pending:
            self._timer = loop.call_later(self.max_wait_s, self._flush)
        if batch:
            task = loop.run_in_executor(self.executor, self._write, [item for item, _ in batch])
            task.add_done_callback(lambda done: self._settle(batch, done))

    def _write(self, items: list[Any]) -> list[Any]:
        try:
            return self.write_many(items)
        except Exception:
            if len(items) == 1:
                raise
            log.warning("group_commit_batch_failed_retrying_one_by_one", size=len(items), exc_info=True)
            results: list[Any] = []
            for item in items:
                try:
                    results.append(self.write_many([item])[0])
                except Exception as exc:
                    results.append(_Failed(exc))
            return results

    @staticmethod
    def _settle(batch, done: asyncio.Future) -> None:
        try:
            results = done.result()
        except Exception as exc:
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, future), result in zip(batch, results):
            if future.done():  # the client went away
                continue
            if isinstance(result, _Failed):
                future.set_exception(result.exc)
            else:
                future.set_result(result)


class _Failed:
    def __init__(self, exc: Exception) -> None:
        self.exc = exc
