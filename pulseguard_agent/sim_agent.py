"""One simulated agent: a real Client and AgentRunner driven one step at a time.

Misbehaviour is what the server has to notice: a silent agent simply stops
heartbeating (late, then stale), a flaky one misses beats and sometimes crashes without
a goodbye and re-registers later with a new token, a restarted one re-registers too.

Telemetry goes the way a real agent's does: samples into a TelemetryBuffer, batches
through a TelemetrySender (and a spool, if the simulator has one). Host and GPU samples
are taken on the metrics grid, LLM calls cover the time since the previous round.

With the simulator's `tasks` on, the agent also works the real task queue (sim_work.py):
it is busy while it holds tasks, and its heartbeats renew their leases.
"""

from __future__ import annotations

import logging
import math
import random
import time
from pathlib import Path
from typing import TYPE_CHECKING

from pulseguard_agent.backoff import Backoff
from pulseguard_agent.buffer import TelemetryBuffer
from pulseguard_agent.client import Client
from pulseguard_agent.errors import PulseGuardError, ServerUnavailable
from pulseguard_agent.runner import AgentRunner
from pulseguard_agent.sim_fleet import SimProfile
from pulseguard_agent.sim_host import FakeHost
from pulseguard_agent.sim_llm import FakeLLM
from pulseguard_agent.sim_work import SimWorkload
from pulseguard_agent.spool import Spool
from pulseguard_agent.telemetry import Telemetry

if TYPE_CHECKING:
    from pulseguard_agent.simulator import Simulator

log = logging.getLogger(__name__)


class SimAgent:
    """A simulated agent; `step(now)` does one thing and returns seconds until the next step.

    `status` says what it is doing: starting, active, silent, stalled, crashed,
    restarting or gave_up (registration refused for good).
    """

    def __init__(self, profile: SimProfile, sim: Simulator):
        self.profile = profile
        self.sim = sim
        self.rng = random.Random(profile.seed)
        self.client = Client(sim.url, timeout=sim.timeout, max_attempts=2, rng=self.rng)
        self.host = FakeHost(profile, self.rng)
        # Its own stream of draws: the calls do not depend on how many heartbeats happened.
        self.llm = FakeLLM(profile, random.Random(profile.seed ^ 0x11A))
        self._retry = Backoff(base=1.0, cap=60.0, rng=self.rng)
        self.telemetry: Telemetry | None = None
        if sim.telemetry:
            spool = Spool(Path(sim.spool_dir) / profile.name) if sim.spool_dir else None
            self.telemetry = Telemetry(self.client, buffer=TelemetryBuffer(max_samples=50_000), spool=spool,
                                       collect=self._samples, metrics_interval_s=sim.metrics_interval,
                                       flush_interval_s=sim.flush_interval)
        self.runner = AgentRunner(
            self.client, readings=self._readings, on_restart=self._on_restart, interval_s=sim.interval,
            backoff=self._retry, telemetry=self.telemetry or False,
        )
        self.work: SimWorkload | None = SimWorkload(self) if sim.tasks else None
        self.status = "starting"
        self.error: PulseGuardError | None = None
        self._needs_register = True
        self._restart_pending = False
        self._failures = 0
        self._next_silence_at = math.inf
        self._next_crash_at = math.inf
        self._next_flush_at = 0.0
        self._sampled_at: float | None = None  # wall time of the last telemetry round

    def step(self, now: float) -> float | None:
        """Register, misbehave, or heartbeat once; None means this agent is done for good."""
        timing = self.sim.timing
        if self._needs_register:
            return self._register(now)
        if now >= self._next_silence_at:
            duration = self.rng.uniform(*timing.silence_s)
            self._next_silence_at = now + duration + self.rng.uniform(*timing.active_before_silence_s)
            return self._pause("silent", duration, "goes silent")
        if now >= self._next_crash_at:
            self._needs_register = True
            self._next_crash_at = math.inf
            self.client.token = None  # a crashed process forgets its token
            self._forget_telemetry()  # and what it had not sent yet
            self._forget_work()  # and the tasks it was working on
            return self._pause("crashed", self.rng.uniform(*timing.crash_downtime_s), "crashes (no goodbye)")
        if self.profile.flaky and self.rng.random() < timing.stall_probability:
            missed = self.rng.randint(1, 3)
            return self._pause("stalled", (missed + 1) * self.runner.heartbeat_interval_s, f"misses {missed} beats")
        return self._heartbeat(now)

    def goodbye(self) -> bool:
        """Clean shutdown: last telemetry and goodbye if registered and alive; True if the server heard it."""
        try:
            if not self.client.registered or self.status in ("crashed", "gave_up"):
                return False
            if self.telemetry is not None:
                self._flush()
            self.client.goodbye(attempts=1)
            self.sim.stats.add("goodbyes")
            return True
        except PulseGuardError as exc:
            log.debug("%s: goodbye failed: %s", self.profile.name, exc)
            return False
        finally:
            self.client.close()

    # --- steps -----------------------------------------------------------------------

    def _register(self, now: float) -> float | None:
        p = self.profile
        try:
            self.client.register(
                self.sim.enrollment_key, p.name, capabilities=p.capabilities, labels=p.labels, version=p.version,
                host=p.host, model=p.model, provider=p.provider, kind=p.role.kind, replace=True,
            )
        except ServerUnavailable as exc:
            return self._backoff(exc, "registration")
        except PulseGuardError as exc:
            log.error("%s: registration refused, giving up: %s", p.name, exc)
            self.status, self.error = "gave_up", exc
            return None
        timing = self.sim.timing
        self._needs_register = False
        self._failures = 0
        self.status = "active"
        self.runner.state = "idle"
        self.runner.isolated = False
        self.sim.stats.add("registrations")
        if p.silent_prone:
            self._next_silence_at = now + self.rng.uniform(*timing.active_before_silence_s)
        if p.flaky:
            self._next_crash_at = now + self.rng.uniform(*timing.active_before_crash_s)
        # First heartbeat soon, but not all agents at the same instant.
        return self.rng.uniform(0.05, min(1.0, self.runner.heartbeat_interval_s))

    def _heartbeat(self, now: float) -> float:
        self.status = "active"
        held = None
        if self.work is None:
            self._pick_work()
        else:
            held = self.work.held_ids()
        sent_at = time.monotonic()
        try:
            response = self.runner.run_once(task_ids=held)
        except ServerUnavailable as exc:
            self.sim.stats.add("heartbeat_failures")
            return self._backoff(exc, "heartbeat")
        except PulseGuardError as exc:
            self.sim.stats.add("heartbeat_refusals")
            if exc.status in (401, 403, 404):
                # Someone took our name or deleted us: a real agent would stop; the demo comes back.
                log.warning("%s: heartbeat rejected (%s); registering again", self.profile.name, exc)
                self._needs_register = True
                return self.rng.uniform(1.0, 5.0)
            log.warning("%s: heartbeat refused: %s", self.profile.name, exc)
            return self._interval()
        self._failures = 0
        if self.work is not None:
            self.work.leases(response.get("tasks"), sent_at)
        self.sim.stats.add("heartbeats")
        if response.get("commands"):
            self.sim.stats.add("commands", len(response["commands"]))
        self.sim.stats.latency(self.client.last_latency_ms)
        if self.telemetry is not None:
            try:
                self._telemetry(now)
            except PulseGuardError as exc:
                log.warning("%s: telemetry rejected (%s); registering again", self.profile.name, exc)
                self._needs_register = True
                return self.rng.uniform(1.0, 5.0)
        if self._restart_pending:
            self._restart_pending = False
            self._needs_register = True
            self.client.token = None
            self._forget_work()
            return self._pause("restarting", self.rng.uniform(*self.sim.timing.restart_pause_s), "restarts")
        return self._interval()

    # --- helpers ---------------------------------------------------------------------

    def _pick_work(self) -> None:
        """Idle agents pick up work now and then and busy ones finish it; drained or isolated ones do not."""
        if self.runner.state == "draining" or self.runner.isolated:
            if self.runner.state == "busy":
                self.runner.state = "idle"
            return
        timing = self.sim.timing
        if self.runner.state == "idle" and self.rng.random() < timing.busy_probability:
            self.runner.state = "busy"
        elif self.runner.state == "busy" and self.rng.random() < timing.idle_probability:
            self.runner.state = "idle"

    def _readings(self) -> dict:
        return self.host.readings(self.runner.state, self.runner.isolated)

    def _telemetry(self, now: float) -> None:
        """Take the telemetry rounds that are due, and send a batch when the flush interval has passed."""
        assert self.telemetry is not None
        self.telemetry.collect_once()
        if now >= self._next_flush_at or len(self.telemetry.buffer) >= self.telemetry.buffer.flush_at:
            self._next_flush_at = now + self.sim.flush_interval
            self._flush()

    def _flush(self) -> None:
        assert self.telemetry is not None
        sender = self.telemetry.sender
        before = dict(sender.stats)
        try:
            self.telemetry.flush()
        finally:
            for key, value in sender.stats.items():
                if value != before.get(key, 0):
                    self.sim.stats.add(f"telemetry_{key}", value - before.get(key, 0))

    def _samples(self) -> list[dict]:
        """Host and GPU samples for each metrics interval since the last round, and the LLM calls between."""
        interval = self.sim.metrics_interval
        wall = time.time()
        if self._sampled_at is None:
            self._sampled_at = wall - interval
        # After a silence a real agent's samples would be missing too: at most a few rounds are caught up.
        rounds = min(int((wall - self._sampled_at) / interval), 3)
        if rounds < 1:
            return []
        start = max(self._sampled_at, wall - rounds * interval)
        state, isolated = self.runner.state, self.runner.isolated
        # Working tasks, the calls of the work are recorded with each task (sim_work.py).
        llm_state = "idle" if self.work is not None and state == "busy" else state
        samples: list[dict] = []
        for k in range(1, rounds + 1):
            ts = round(start + k * interval, 3)
            samples.extend(self.host.samples(state, isolated, ts, interval))
            samples.extend(self.llm.calls(llm_state, isolated, ts, interval))
        self._sampled_at = start + rounds * interval
        return samples

    def _forget_work(self) -> None:
        if self.work is not None:
            self.work.forget()

    def _forget_telemetry(self) -> None:
        if self.telemetry is not None:
            self.telemetry.buffer.take()
        self._sampled_at = None

    def _on_restart(self, command: dict) -> None:
        # The ack is already sent; the restart itself happens after this heartbeat returns.
        self._restart_pending = True
        self.sim.stats.add("restarts")

    def _pause(self, status: str, seconds: float, what: str) -> float:
        self.status = status
        self.sim.stats.add(status)
        self.client.close()
        log.info("%s %s for %.0fs", self.profile.name, what, seconds)
        return seconds

    def _backoff(self, exc: PulseGuardError, what: str) -> float:
        self._failures += 1
        delay = self._retry.delay(self._failures)
        log.warning("%s: %s failed (%s); retrying in %.1fs", self.profile.name, what, exc, delay)
        return delay

    def _interval(self) -> float:
        # +-10% so a fleet started together does not heartbeat in lockstep forever.
        return self.runner.heartbeat_interval_s * self.rng.uniform(0.9, 1.1)
