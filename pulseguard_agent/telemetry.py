"""An agent's telemetry on its own schedule: collect host and GPU samples, flush batches.

`AgentRunner.run()` starts one `Telemetry` in a background thread next to the heartbeat
loop: a slow upload or an outage never delays a heartbeat, and a heartbeat never delays
a sample. On start the spool is replayed (what an earlier process could not send); on
stop what is buffered is sent, or spooled when the server cannot take it, so a restart
loses nothing that was collected.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from pulseguard_agent.buffer import TelemetryBuffer, default_buffer
from pulseguard_agent.client import Client
from pulseguard_agent.config import TelemetryConfig
from pulseguard_agent.errors import PulseGuardError
from pulseguard_agent.gpu import gpu_samples
from pulseguard_agent.host import HostSampler
from pulseguard_agent.sender import TelemetrySender, rejects_agent
from pulseguard_agent.spool import Spool

log = logging.getLogger(__name__)

Collector = Callable[[], list]


def machine_collector(disk_path: str = "/") -> Collector:
    """A collector of this machine's host sample and one sample per GPU (NVML)."""
    host = HostSampler(disk_path)

    def collect() -> list:
        return [host.sample(), *gpu_samples()]

    return collect


class Telemetry:
    """Calls `collect()` every `metrics_interval_s` into `buffer`; `sender` flushes it every
    `flush_interval_s`, or sooner once the buffer holds `buffer.flush_at` samples.

    Drive it with `start()` / `stop()` (a thread), or call `collect_once()` and `flush()`
    yourself (the simulator does, one step at a time).
    """

    def __init__(self, client: Client, *, buffer: TelemetryBuffer | None = None, spool: Spool | None = None,
                 collect: Collector | None = None, metrics_interval_s: float = 10.0, flush_interval_s: float = 10.0):
        self.buffer = buffer if buffer is not None else default_buffer()
        self.sender = TelemetrySender(client, self.buffer, spool)
        self.metrics_interval_s = metrics_interval_s
        self.flush_interval_s = flush_interval_s
        self.error: PulseGuardError | None = None
        self._collect = collect
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def from_config(cls, client: Client, config: TelemetryConfig, *, agent: str,
                    buffer: TelemetryBuffer | None = None, collect: Collector | None = None) -> Telemetry:
        """Telemetry as `config` says, spooling under `config.spool_path(agent)` (no spool if its size is 0)."""
        spool = Spool(config.spool_path(agent), config.spool_max_bytes) if config.spool_max_bytes else None
        if buffer is None:
            buffer = default_buffer()
            buffer.flush_at = config.flush_at
        return cls(client, buffer=buffer, spool=spool, collect=collect or machine_collector(),
                   metrics_interval_s=config.metrics_interval_s, flush_interval_s=config.flush_interval_s)

    @property
    def spool(self) -> Spool | None:
        return self.sender.spool

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def collect_once(self) -> int:
        """Take one round of samples into the buffer; returns how many (a failing sensor is logged, not raised)."""
        if self._collect is None:
            return 0
        try:
            samples = self._collect()
            self.buffer.extend(samples)
        except Exception:  # a broken sensor must not stop telemetry, nor the agent
            log.exception("Collecting telemetry failed")
            return 0
        return len(samples)

    def flush(self) -> int:
        """Replay the spool and send what is buffered (see TelemetrySender.flush)."""
        return self.sender.flush()

    def start(self, on_rejected: Callable[[PulseGuardError], None] | None = None) -> None:
        """Collect and flush in a background thread until `stop()`.

        If the server rejects this agent (401/403), the thread ends and calls
        `on_rejected(error)`; the runner stops on it as it does for a refused heartbeat.
        """
        if self._thread is not None:
            raise RuntimeError("Telemetry is already running")
        self._stopping.clear()
        self.buffer.notify(self._wake)
        self._thread = threading.Thread(target=self._loop, args=(on_rejected,), name="pulseguard-telemetry",
                                        daemon=True)
        self._thread.start()

    def stop(self, *, send: bool = True, timeout: float | None = None) -> None:
        """End the thread, then send what is buffered, or spool it (send=False, or the server was unreachable).

        A replay under way is cut short (the rest stays in the spool for the next start),
        and the spool is not replayed again here: a shutdown takes one request at most.
        """
        self._stopping.set()
        self._wake.set()
        self.sender.cancelled.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        self.buffer.forget(self._wake)
        self.sender.cancelled.clear()
        if self.error is not None or not send or not self.sender.reachable:
            self.sender.spool_buffered()
            return
        try:
            self.sender.flush(replay=False)
        except PulseGuardError as exc:
            log.warning("Final telemetry flush refused: %s", exc)

    def _loop(self, on_rejected: Callable[[PulseGuardError], None] | None) -> None:
        now = time.monotonic()
        # Flush at once: replays what an earlier process spooled.
        next_collect, next_flush = now, now
        while not self._stopping.is_set():
            now = time.monotonic()
            if now >= next_collect:
                self.collect_once()
                # On the grid, not "interval after the last one": samples stay evenly spaced.
                next_collect = max(next_collect + self.metrics_interval_s, now)
            if now >= next_flush or len(self.buffer) >= self.buffer.flush_at:
                self._wake.clear()
                try:
                    self.flush()
                except PulseGuardError as exc:
                    if rejects_agent(exc):
                        self.error = exc
                        log.error("Telemetry stopped: the server rejected this agent: %s", exc)
                        if on_rejected is not None:
                            on_rejected(exc)
                        return
                    log.error("Telemetry flush failed: %s", exc)
                except Exception:  # a bug in a flush must not end telemetry for good
                    log.exception("Telemetry flush failed")
                next_flush = time.monotonic() + self.flush_interval_s
            self._wake.wait(max(min(next_collect, next_flush) - time.monotonic(), 0.0))
