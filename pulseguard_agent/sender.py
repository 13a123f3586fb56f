"""Moves samples from a TelemetryBuffer to the server in batches, through the spool when it is down.

What the server's answer means for a batch:

- 2xx: stored. Transient failures (no connection, 5xx, 429) and a 404 that is not
  `unknown_agent` (a server older than the metrics API): the batch is spooled, the
  flush stops sending, and the next flush replays the spool oldest-first.
- 400 invalid_samples: the server stores nothing of a batch with one bad sample. The
  samples it names are dropped and the rest sent once more; if that is refused too, the
  batch is dropped. Either way it is never retried forever, and drops are counted.
- 413 batch_too_large: the batch is split in halves and each sent (a single sample
  the server will not take is dropped).
- 401 / 403 / 404 unknown_agent: the server no longer accepts this agent. The batch is
  spooled (a restarted, re-registered agent sends it) and PulseGuardError is raised, as
  for a heartbeat.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from pathlib import Path

from pulseguard_agent.buffer import TelemetryBuffer
from pulseguard_agent.client import Client
from pulseguard_agent.errors import PulseGuardError
from pulseguard_agent.samples import MAX_BATCH, decode_batch, encode_batch
from pulseguard_agent.spool import Spool

log = logging.getLogger(__name__)


def rejects_agent(error: PulseGuardError) -> bool:
    """Whether the server refused this agent's identity (not the data it sent)."""
    return error.status in (401, 403) or (error.status == 404 and error.code == "unknown_agent")


class TelemetrySender:
    """`flush()` sends everything buffered; thread-safe (one flush at a time).

    `stats` counts samples: sent, replayed (from the spool), spooled, dropped_invalid
    (refused by the server), dropped_unsent (no spool to keep them in); the spool counts
    what its bound dropped. `attempts` per request is 1 by default: the spool is the
    retry, and a flush never sits in backoff while new samples pile up.
    """

    def __init__(self, client: Client, buffer: TelemetryBuffer, spool: Spool | None = None, *,
                 batch_size: int = MAX_BATCH, attempts: int = 1):
        if not 1 <= batch_size <= MAX_BATCH:
            raise ValueError(f"batch_size must be between 1 and {MAX_BATCH}")
        self.client = client
        self.buffer = buffer
        self.spool = spool
        self.batch_size = batch_size
        self.attempts = attempts
        self.stats: Counter[str] = Counter()
        self.reachable = True  # as of the last request
        # Set to end a long replay early (shutdown): what is left stays in the spool.
        self.cancelled = threading.Event()
        self._lock = threading.Lock()

    def flush(self, *, replay: bool = True) -> int:
        """Replay the spool (oldest first), then send what is buffered; returns samples the server took.

        While the server is unreachable, what is buffered goes to the spool instead. Raises
        PulseGuardError when the server rejects this agent (see `rejects_agent`); whatever
        was not sent is kept (spool, else the buffer). replay=False sends only what is
        buffered (the last flush before exiting: the next process replays the spool).
        """
        with self._lock:
            before = self.stats["sent"]
            if replay:
                self.reachable = self._replay()
            while True:
                batch = self.buffer.take(self.batch_size)
                if not batch:
                    break
                payload = encode_batch(batch)
                if self.reachable:
                    self.reachable = self._deliver(payload, len(batch), batch)
                else:
                    self._keep(payload, len(batch))
            return self.stats["sent"] - before

    def spool_buffered(self) -> int:
        """Move everything buffered to the spool without sending (on shutdown without a server)."""
        with self._lock:
            moved = 0
            while batch := self.buffer.take(self.batch_size):
                self._keep(encode_batch(batch), len(batch))
                moved += len(batch)
            return moved

    # --- internals -------------------------------------------------------------------

    def _replay(self) -> bool:
        if self.spool is None:
            return True
        for path in self.spool.files():
            if self.cancelled.is_set():
                return False
            try:
                payload = self.spool.read(path)
            except FileNotFoundError:  # pushed out by the bound since it was listed
                continue
            if not self._deliver(payload, self.spool.samples_in(path), path=path):
                return False
        return True

    def _deliver(self, payload: bytes, count: int, samples: list[dict] | None = None, *,
                 path: Path | None = None, retry_invalid: bool = True) -> bool:
        """Send one batch and dispose of it: stored, dropped, or spooled. False while the server is unreachable.

        `path` is the spool file the batch came from: it is removed once the batch is
        settled, and left where it is if the batch must wait.
        """
        try:
            self.client.send_metrics_payload(payload, attempts=self.attempts)
        except PulseGuardError as exc:
            must_wait = exc.transient or rejects_agent(exc) or exc.status in (404, 405)
            if must_wait:
                if path is None:
                    self._keep(payload, count)
                if rejects_agent(exc):
                    raise
                log.log(logging.INFO if exc.transient else logging.WARNING,
                        "Telemetry not sent (%s); %s", exc, "kept in the spool" if self.spool else "no spool: dropped")
                return False
            if path is not None:
                self.spool.remove(path)  # type: ignore[union-attr]
            return self._refused(exc, payload, count, samples, retry_invalid)
        self.stats["sent"] += count
        if path is not None:
            self.stats["replayed"] += count
            self.spool.remove(path)  # type: ignore[union-attr]
        return True

    def _refused(self, exc: PulseGuardError, payload: bytes, count: int, samples: list[dict] | None,
                 retry_invalid: bool) -> bool:
        if samples is None:
            try:
                samples = decode_batch(payload)
            except ValueError as decode_error:
                return self._drop(count, f"{exc}; and the batch cannot be read back: {decode_error}")
        if exc.status == 413 and len(samples) > 1:
            half = len(samples) // 2
            reachable = True
            for part in (samples[:half], samples[half:]):
                encoded = encode_batch(part)
                if reachable:
                    reachable = self._deliver(encoded, len(part), part)
                else:
                    self._keep(encoded, len(part))
            return reachable
        bad = {item.get("index") for item in exc.samples if isinstance(item, dict) and isinstance(item.get("index"), int)}
        if exc.status == 400 and retry_invalid and bad:
            good = [sample for i, sample in enumerate(samples) if i not in bad]
            for item in exc.samples[:5]:
                log.warning("Telemetry sample refused: %s (index %s, field %s)", item.get("reason"),
                            item.get("index"), item.get("field"))
            self._drop(len(samples) - len(good), f"{exc}", quiet=True)
            if not good:
                return True
            return self._deliver(encode_batch(good), len(good), good, retry_invalid=False)
        return self._drop(len(samples), str(exc))

    def _drop(self, count: int, why: str, *, quiet: bool = False) -> bool:
        self.stats["dropped_invalid"] += count
        if not quiet:
            log.error("Telemetry batch of %d sample(s) refused and dropped: %s", count, why)
        return True

    def _keep(self, payload: bytes, count: int) -> None:
        if self.spool is None:
            self.stats["dropped_unsent"] += count
            return
        try:
            kept = self.spool.put(payload, count)
        except OSError as exc:  # disk full, read-only, permissions: the agent itself must carry on
            log.error("Telemetry spool %s cannot be written (%s): %d sample(s) dropped", self.spool.directory, exc, count)
            self.stats["dropped_unsent"] += count
            return
        if kept is not None:
            self.stats["spooled"] += count
