"""Running tasks from the PulseGuard queue: claim (long poll), renew, complete or fail.

docs/routing.md: an agent leases tasks whose capabilities (and GPU memory) it has, must
renew each lease before `attempt_timeout_s` runs out, then completes the task with its
result or fails it with an error type the server classifies and retries by. A
`TaskWorker` does that around a handler: one thread waits for work with a long poll,
`concurrency` threads run handlers, one thread renews leases at a third of each task's
timeout. AgentRunner builds one when it is given task handlers; it can also run alone.

A task can be lost while it runs (an operator cancelled or reassigned it, the lease ran
out, the agent was isolated). The worker learns it from a renewal and tells the handler
through `ClaimedTask.lost` / `wait()` / `check()`; whatever the handler returns then is
dropped, since the task is no longer this agent's to report.
"""

from __future__ import annotations

import contextvars
import json
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from pulseguard_agent.backoff import Backoff
from pulseguard_agent.client import MAX_CLAIM, MAX_WAIT_S, Client
from pulseguard_agent.errors import ERROR_TYPES, PulseGuardError, ServerUnavailable, TaskError, TaskLost

log = logging.getLogger(__name__)

DEFAULT_WAIT_S = 20.0
RENEW_FRACTION = 1 / 3  # renew once this share of the lease has passed
_MIN_POLL_S = 1.0  # a claim loop never spins faster than this, whatever `wait` is
_current: contextvars.ContextVar[ClaimedTask | None] = contextvars.ContextVar("pulseguard_task", default=None)


@dataclass(eq=False)
class ClaimedTask:
    """A task this agent holds, as the claim returned it, and whether it is still ours."""

    id: int
    kind: str
    payload: dict
    attempt: int = 1
    attempt_timeout_s: float = 300.0
    lease_expires_at: str | None = None
    resource_class: str = "cpu"
    vram_mb: int | None = None
    renewed_at: float = field(default_factory=time.monotonic)  # monotonic: when the lease last began
    lost_code: str = ""
    lost_reason: str = ""
    _lost: threading.Event = field(default_factory=threading.Event, repr=False)

    @classmethod
    def from_claim(cls, data: Mapping[str, Any]) -> ClaimedTask:
        return cls(
            id=int(data["id"]), kind=str(data.get("kind") or ""), payload=dict(data.get("payload") or {}),
            attempt=int(data.get("attempt") or 1), attempt_timeout_s=float(data.get("attempt_timeout_s") or 300),
            lease_expires_at=data.get("lease_expires_at"), resource_class=str(data.get("resource_class") or "cpu"),
            vram_mb=data.get("vram_mb"),
        )

    @property
    def lost(self) -> bool:
        """Whether this agent no longer holds the task: stop working on it."""
        return self._lost.is_set()

    def wait(self, seconds: float) -> bool:
        """Sleep up to `seconds`, waking at once if the task is lost; True if it was."""
        return self._lost.wait(seconds)

    def check(self) -> None:
        """Raise TaskLost if the task was lost (call it between steps of long work)."""
        if self.lost:
            raise TaskLost(self.id, self.lost_code or "lost", self.lost_reason or f"Task {self.id} was lost")

    def mark_lost(self, code: str, reason: str) -> None:
        if not self.lost:
            self.lost_code, self.lost_reason = code, reason
            self._lost.set()

    @property
    def renew_due_at(self) -> float:
        return self.renewed_at + self.attempt_timeout_s * RENEW_FRACTION


def current_task() -> ClaimedTask | None:
    """The task the calling thread's handler is running (None outside a handler).

    `record_llm_call()` uses it to tag the calls a handler makes with the task's id.
    """
    return _current.get()


def classify(exc: BaseException) -> tuple[str, bool]:
    """(error_type, retryable) for an exception a task handler raised.

    TaskError (and TaskRejected) say it themselves; an `error_type` attribute naming a
    known type is taken as given; TimeoutError -> timeout, ConnectionError -> connection,
    MemoryError -> resource; an LLM SDK's rate-limit, timeout or connection error is
    named by its class (as the integrations record it); anything else is agent_error.
    """
    if isinstance(exc, TaskError):
        return exc.error_type, exc.retryable
    named = getattr(exc, "error_type", None)
    if isinstance(named, str) and named in ERROR_TYPES:
        return named, True
    if isinstance(exc, TimeoutError):
        return "timeout", True
    if isinstance(exc, ConnectionError):
        return "connection", True
    if isinstance(exc, MemoryError):
        return "resource", True
    from pulseguard_agent.integrations._common import error_type

    provider_error = error_type(exc)
    if provider_error in ("rate_limit", "timeout", "connection"):
        return provider_error, True
    return "agent_error", True


class TaskWorker:
    """Claims tasks and runs `handler(task) -> dict` on up to `concurrency` at once.

    Claims wait up to `wait_s` for work (long poll) and only while `can_claim()` is true
    and a slot is free; `on_load(n)` is called whenever the number of running tasks
    changes; `on_rejected(error)` when the server refuses this agent's token (the worker
    then stops claiming). `start()` returns at once; `stop()` stops claiming, lets running
    tasks finish for up to `timeout` seconds and abandons the rest (the server gives their
    tasks out again when the leases run out, or at once after a goodbye).
    """

    def __init__(
        self,
        client: Client,
        handler: Callable[[ClaimedTask], Any],
        *,
        concurrency: int = 1,
        wait_s: float = DEFAULT_WAIT_S,
        can_claim: Callable[[], bool] = lambda: True,
        on_load: Callable[[int], None] | None = None,
        on_rejected: Callable[[PulseGuardError], None] | None = None,
        backoff: Backoff | None = None,
    ):
        if not 1 <= concurrency <= MAX_CLAIM:
            raise ValueError(f"concurrency must be between 1 and {MAX_CLAIM}")
        if not 0 <= wait_s <= MAX_WAIT_S:
            raise ValueError(f"wait_s must be between 0 and {MAX_WAIT_S:g}")
        self.client = client
        self.handler = handler
        self.concurrency = concurrency
        self.wait_s = wait_s
        self.stats: Counter[str] = Counter()
        self._can_claim = can_claim
        self._on_load = on_load
        self._on_rejected = on_rejected
        self._backoff = backoff or Backoff(base=1.0, cap=60.0)
        self._running: dict[int, ClaimedTask] = {}
        self._cond = threading.Condition()
        self._claims_over = threading.Event()  # set once claiming stops for good
        self._closed = threading.Event()
        self._renew_wake = threading.Event()
        self._pool: ThreadPoolExecutor | None = None
        self._threads: list[threading.Thread] = []

    # --- control ---------------------------------------------------------------------

    @property
    def active(self) -> int:
        """How many tasks are running."""
        with self._cond:
            return len(self._running)

    def held_ids(self) -> list[int]:
        """Ids of the tasks this agent holds and still works on (a heartbeat renews them too)."""
        with self._cond:
            return sorted(t.id for t in self._running.values() if not t.lost)

    def start(self) -> None:
        if self._pool is not None:
            raise RuntimeError("A TaskWorker starts once")
        self._pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="pulseguard-task")
        for name, target in (("claim", self._claim_loop), ("renew", self._renew_loop)):
            thread = threading.Thread(target=target, name=f"pulseguard-task-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def wake(self) -> None:
        """Re-check `can_claim()` now (after a release, say) rather than within a second."""
        with self._cond:
            self._cond.notify_all()

    def stop_claiming(self) -> None:
        """Claim nothing more; a claim waiting for work is cut short. Running tasks go on."""
        if not self._claims_over.is_set():
            self._claims_over.set()
            self.client.abort_claim()
        self.wake()

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait until no task runs; True if none does."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._running, timeout)

    def stop(self, timeout: float = 0.0) -> None:
        """Stop claiming, give running tasks up to `timeout` seconds, then abandon the rest."""
        self.stop_claiming()
        if not self.wait_idle(timeout):
            with self._cond:
                left = list(self._running.values())
            for task in left:
                task.mark_lost("abandoned", "the agent stopped before the task finished")
            log.warning("Stopping with %d task(s) unfinished: %s; the server will give them out again",
                        len(left), ", ".join(str(t.id) for t in left))
        self._closed.set()
        self._renew_wake.set()
        for thread in self._threads:
            thread.join(timeout=2.0)
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)

    def leases_renewed(self, renewed: list[int], lost: list[int], *, at: float | None = None) -> None:
        """Take a renewal's answer (from renew_tasks, or a heartbeat that named the tasks)."""
        at = time.monotonic() if at is None else at
        with self._cond:
            tasks = dict(self._running)
        for task_id in renewed:
            if task_id in tasks:
                tasks[task_id].renewed_at = max(tasks[task_id].renewed_at, at)
        for task_id in lost:
            task = tasks.get(task_id)
            if task is not None and not task.lost:
                log.warning("Task %s (%s) was lost: cancelled, reassigned or its lease ran out; stopping work on it",
                            task.id, task.kind)
                task.mark_lost("lost", "the server says this agent no longer holds the task")

    # --- claiming --------------------------------------------------------------------

    def _claim_loop(self) -> None:
        failures = 0
        while not self._claims_over.is_set():
            with self._cond:
                self._cond.wait_for(lambda: self._claims_over.is_set() or self._may_claim(), timeout=1.0)
                free = self.concurrency - len(self._running)
            if self._claims_over.is_set():
                break
            if free <= 0 or not self._can_claim():
                continue
            started = time.monotonic()
            try:
                claimed = self.client.claim_tasks(limit=free, wait=self.wait_s, attempts=1)
            except ServerUnavailable as exc:
                if self._claims_over.is_set():
                    break
                failures += 1
                delay = self._backoff.delay(failures)
                log.warning("Claim failed (%s); next try in %.1fs", exc, delay)
                self._claims_over.wait(delay)
                continue
            except PulseGuardError as exc:
                if exc.status in (401, 403):
                    log.error("The server refused this agent's claim: %s; claiming stops", exc)
                    self._claims_over.set()
                    if self._on_rejected is not None:
                        self._on_rejected(exc)
                    break
                failures += 1
                delay = self._backoff.cap
                log.error("Claim refused: %s; next try in %.0fs", exc, delay)
                self._claims_over.wait(delay)
                continue
            failures = 0
            for data in claimed:
                self._start(ClaimedTask.from_claim(data))
            if not claimed:
                # The server answers at once when it will give this agent nothing (it is
                # draining, say) or when `wait` is 0: do not ask again in a tight loop.
                self._claims_over.wait(max(0.0, _MIN_POLL_S - (time.monotonic() - started)))

    def _may_claim(self) -> bool:
        return len(self._running) < self.concurrency and self._can_claim()

    def _start(self, task: ClaimedTask) -> None:
        with self._cond:
            self._running[task.id] = task
            load = len(self._running)
        self.stats["claimed"] += 1
        log.info("Claimed task %s (%s), attempt %d", task.id, task.kind, task.attempt)
        self._load_changed(load)
        self._renew_wake.set()
        assert self._pool is not None
        self._pool.submit(self._run, task)

    def _load_changed(self, load: int) -> None:
        if self._on_load is not None:
            try:
                self._on_load(load)
            except Exception:
                log.exception("on_load hook failed")

    # --- running ---------------------------------------------------------------------

    def _run(self, task: ClaimedTask) -> None:
        token = _current.set(task)
        started = time.monotonic()
        try:
            try:
                result = self.handler(task)
            except TaskLost as exc:
                task.mark_lost(exc.code, exc.message)
                self._report(task, None, None, started)
            except Exception as exc:
                log.log(logging.INFO if isinstance(exc, TaskError) else logging.WARNING,
                        "Task %s (%s) failed: %s: %s", task.id, task.kind, type(exc).__name__, exc,
                        exc_info=not isinstance(exc, TaskError))
                self._report(task, None, exc, started)
            else:
                self._report(task, result, None, started)
        except Exception:  # reporting must never kill the pool thread
            log.exception("Reporting task %s failed", task.id)
        finally:
            _current.reset(token)
            with self._cond:
                self._running.pop(task.id, None)
                load = len(self._running)
                self._cond.notify_all()
            self._load_changed(load)

    def _report(self, task: ClaimedTask, result: Any, exc: BaseException | None, started: float) -> None:
        took = time.monotonic() - started
        if task.lost:
            self.stats["lost"] += 1
            log.info("Task %s (%s) was lost (%s) after %.1fs; nothing reported", task.id, task.kind,
                     task.lost_reason or task.lost_code, took)
            return
        try:
            if exc is None:
                body = _as_result(result)
                try:
                    json.dumps(body, allow_nan=False)
                except (TypeError, ValueError) as bad:
                    self.stats["failed"] += 1
                    self.client.fail_task(task.id, "serialization", f"the result is not JSON: {bad}", retryable=False)
                    return
                self.client.complete_task(task.id, body)
                self.stats["succeeded"] += 1
                log.info("Task %s (%s) succeeded in %.1fs", task.id, task.kind, took)
            else:
                error_type, retryable = classify(exc)
                message = f"{type(exc).__name__}: {exc}" if not isinstance(exc, TaskError) else str(exc)
                self.client.fail_task(task.id, error_type, message, retryable)
                self.stats["failed"] += 1
        except TaskLost as lost:
            task.mark_lost(lost.code, lost.message)
            self.stats["lost"] += 1
            log.info("Task %s (%s) finished but is no longer ours (%s): %s", task.id, task.kind, lost.code, lost.message)
        except PulseGuardError as error:
            # Retried already (the client's backoff): the lease will run out and the server
            # will give the task out again.
            self.stats["report_failed"] += 1
            log.error("Could not report task %s (%s): %s", task.id, task.kind, error)

    # --- renewing --------------------------------------------------------------------

    def _renew_loop(self) -> None:
        failures = 0
        while not self._closed.is_set():
            self._renew_wake.clear()
            now = time.monotonic()
            with self._cond:
                held = [t for t in self._running.values() if not t.lost]
            delay = 1.0
            if held and min(t.renew_due_at for t in held) <= now:
                # Renew every lease at once: renewing one early costs nothing, a request each does.
                try:
                    answer = self.client.renew_tasks([t.id for t in held], attempts=1)
                except ServerUnavailable as exc:
                    failures += 1
                    # Well inside the lease still (a third of it gone): try again soon.
                    delay = min(self._backoff.delay(failures), min(t.attempt_timeout_s for t in held) / 6)
                    log.warning("Renewing %d lease(s) failed (%s); again in %.1fs", len(held), exc, delay)
                except PulseGuardError as exc:
                    failures += 1
                    delay = min(self._backoff.cap, min(t.attempt_timeout_s for t in held) / 6)
                    log.error("Renewal refused: %s", exc)
                    if exc.status in (401, 403) and self._on_rejected is not None:
                        self._on_rejected(exc)
                else:
                    failures = 0
                    self.leases_renewed(answer["renewed"], answer["lost"], at=now)
                    self.stats["renewals"] += 1
                    continue
            elif held:
                delay = min(t.renew_due_at for t in held) - now
            self._renew_wake.wait(max(delay, 0.05))


def _as_result(value: Any) -> dict:
    """What a handler returned, as the JSON object the server stores."""
    if value is None:
        return {}
    if isinstance(value, Mapping):
        return dict(value)
    return {"result": value}
