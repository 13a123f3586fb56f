"""Samples waiting to be sent, and the process-wide buffer `record_llm_call()` writes to.

Recording must be cheap and never block on the network: it appends to memory under a
lock; a sender (TelemetrySender, run by AgentRunner) takes batches out. The buffer is
bounded so an agent that never flushes (no runner, a long outage without a spool) uses
a fixed amount of memory: past the bound the oldest samples are dropped and counted.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from pulseguard_agent.samples import llm_call_sample, metric_sample, prepare
from pulseguard_agent.worker import current_task

log = logging.getLogger(__name__)

DEFAULT_MAX_SAMPLES = 100_000
DEFAULT_FLUSH_AT = 1000
_ARGS_WITH_TASK_ID = 12  # this many positional arguments after provider and model include task_id


class TelemetryBuffer:
    """A thread-safe queue of samples, oldest first.

    Once `flush_at` samples wait, the events registered with `notify()` are set, so a
    sender flushes early instead of at its next interval. `dropped` counts samples lost
    to the `max_samples` bound.
    """

    def __init__(self, *, max_samples: int = DEFAULT_MAX_SAMPLES, flush_at: int = DEFAULT_FLUSH_AT):
        if max_samples < 1 or flush_at < 1:
            raise ValueError("max_samples and flush_at must be at least 1")
        self.max_samples = max_samples
        self.flush_at = flush_at
        self.dropped = 0
        self._samples: deque[dict] = deque()
        self._lock = threading.Lock()
        self._listeners: list[threading.Event] = []

    def __len__(self) -> int:
        return len(self._samples)

    def notify(self, event: threading.Event) -> None:
        """Set `event` whenever `flush_at` or more samples are waiting."""
        with self._lock:
            self._listeners.append(event)

    def forget(self, event: threading.Event) -> None:
        """Stop setting `event` (its sender has stopped)."""
        with self._lock:
            if event in self._listeners:
                self._listeners.remove(event)

    def add(self, sample: Mapping[str, Any]) -> None:
        """Queue one sample (see samples.prepare); ValueError if it is not a valid sample."""
        self.extend([sample])

    def extend(self, samples: Iterable[Mapping[str, Any]]) -> None:
        """Queue samples in order; all are checked before any is queued."""
        prepared = [prepare(sample) for sample in samples]
        if not prepared:
            return
        with self._lock:
            self._samples.extend(prepared)
            over = len(self._samples) - self.max_samples
            for _ in range(max(over, 0)):
                self._samples.popleft()
            ready = len(self._samples) >= self.flush_at
            listeners = list(self._listeners) if ready else []
            if over > 0:
                # Counted under the lock; logged at powers of two so an outage does not flood the log.
                before, self.dropped = self.dropped, self.dropped + over
                if before == 0 or (before.bit_length() != self.dropped.bit_length()):
                    log.warning("Telemetry buffer full (%d samples): %d oldest dropped so far",
                                self.max_samples, self.dropped)
        for event in listeners:
            event.set()

    def take(self, limit: int | None = None) -> list[dict]:
        """Remove and return up to `limit` of the oldest samples (all of them without a limit)."""
        with self._lock:
            n = len(self._samples) if limit is None else min(limit, len(self._samples))
            return [self._samples.popleft() for _ in range(n)]

    def record_llm_call(self, provider: str, model: str, *args: Any, **fields: Any) -> dict:
        """Queue one LLM call (arguments as `record_llm_call` below); returns the sample.

        Inside a task handler run by the SDK, `task_id` defaults to the task's id.
        """
        if fields.get("task_id") is None and len(args) < _ARGS_WITH_TASK_ID:
            task = current_task()
            if task is not None:
                fields["task_id"] = str(task.id)
        sample = llm_call_sample(provider, model, *args, **fields)
        self.add(sample)
        return sample

    def record_metric(self, name: str, value: float, *, type: str = "gauge", labels: Mapping[str, str] | None = None,
                      ts: float | datetime | str | None = None) -> dict:
        """Queue one custom gauge or counter reading; returns the sample."""
        sample = metric_sample(name, value, type=type, labels=labels, ts=ts)
        self.add(sample)
        return sample


_default = TelemetryBuffer()


def default_buffer() -> TelemetryBuffer:
    """The process-wide buffer: module-level `record_llm_call()` writes here, AgentRunner sends it."""
    return _default


def record_llm_call(
    provider: str,
    model: str,
    operation: str = "chat",
    tokens_in: int = 0,
    tokens_out: int = 0,
    tokens_cached: int = 0,
    latency_ms: float | None = None,
    ttft_ms: float | None = None,
    status: str = "ok",
    error_type: str | None = None,
    cost_usd: float | None = None,
    session_id: str | None = None,
    workflow_id: str | None = None,
    task_id: str | None = None,
    ts: float | datetime | str | None = None,
) -> dict:
    """Record one LLM call in the process-wide buffer; the running AgentRunner sends it.

    Calls recorded before the runner starts are kept (up to the buffer's bound) and sent
    with its first batch. In a task handler run by the SDK, `task_id` defaults to the
    task's id. Raises ValueError for values the server would refuse.
    """
    return _default.record_llm_call(
        provider, model, operation=operation, tokens_in=tokens_in, tokens_out=tokens_out,
        tokens_cached=tokens_cached, latency_ms=latency_ms, ttft_ms=ttft_ms, status=status, error_type=error_type,
        cost_usd=cost_usd, session_id=session_id, workflow_id=workflow_id, task_id=task_id, ts=ts,
    )


def record_metric(name: str, value: float, *, type: str = "gauge", labels: Mapping[str, str] | None = None,
                  ts: float | datetime | str | None = None) -> dict:
    """Record one custom gauge or counter reading in the process-wide buffer."""
    return _default.record_metric(name, value, type=type, labels=labels, ts=ts)
