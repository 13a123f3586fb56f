"""A fleet of simulated agents talking to a real PulseGuard server through the real SDK.

Each simulated agent is a small state machine whose `step()` does at most one
registration or one heartbeat (with the telemetry rounds then due: host, GPU and LLM
samples through the SDK's buffer and sender) and says when it wants to run next; with
`tasks` on, a second chain of turns per agent works the task queue (sim_work.py). One
scheduler thread hands due steps to a small thread pool, so a fleet of hundreds costs a
few threads and almost no CPU while it waits, and the same class serves `make run` and
benchmarks.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import random
import statistics
import threading
import time
from collections import Counter, deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from pulseguard_agent.client import Client
from pulseguard_agent.errors import PulseGuardError
from pulseguard_agent.sim_agent import SimAgent
from pulseguard_agent.sim_fleet import SimProfile, make_profiles

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SimTiming:
    """How long simulated misbehaviour lasts, as (low, high) seconds drawn uniformly."""

    active_before_silence_s: tuple[float, float] = (60.0, 300.0)
    silence_s: tuple[float, float] = (120.0, 360.0)
    active_before_crash_s: tuple[float, float] = (60.0, 240.0)
    crash_downtime_s: tuple[float, float] = (20.0, 90.0)
    restart_pause_s: tuple[float, float] = (2.0, 8.0)
    stall_probability: float = 0.08  # per heartbeat of a flaky agent: miss 1-3 beats
    busy_probability: float = 0.3  # per heartbeat of an idle agent: pick up work
    idle_probability: float = 0.25  # per heartbeat of a busy agent: finish it
    start_spread_s: float = 5.0
    task_time_scale: float = 1.0  # multiplies how long simulated task work takes (tests use 0.01)
    task_poll_s: tuple[float, float] = (2.0, 4.0)  # between claims that found nothing


class SimStats:
    """Thread-safe counters and recent heartbeat round trips of a simulation."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        self._latencies: deque[float] = deque(maxlen=100_000)

    def add(self, key: str, n: int = 1) -> None:
        with self._lock:
            self._counts[key] += n

    def latency(self, ms: float | None) -> None:
        if ms is not None:
            with self._lock:
                self._latencies.append(ms)

    def snapshot(self) -> dict:
        """Counts so far, plus p50/p95/p99 of heartbeat round trips in ms (when measured)."""
        with self._lock:
            counts = dict(self._counts)
            latencies = list(self._latencies)
        if len(latencies) >= 2:
            cuts = statistics.quantiles(latencies, n=100, method="inclusive")
            counts["latency_ms"] = {"p50": round(cuts[49], 2), "p95": round(cuts[94], 2), "p99": round(cuts[98], 2)}
        return counts


class Simulator:
    """`agents` simulated agents registering (replace=True) and heartbeating against `url`.

    A `silent_rate` share of them go quiet now and then, a `fail_rate` share stall and
    crash (then re-register); all of them obey drain, isolate, release, restart and
    config. `interval` overrides the server's heartbeat interval; `seed` makes the
    fleet reproducible. `start()` returns at once; `stop()` says goodbye for every agent.

    With `telemetry` (the default) agents send host and GPU samples every
    `metrics_interval` seconds and the LLM calls they make, in batches every
    `flush_interval` (default: the metrics interval); with `spool_dir`, batches the
    server cannot take wait there (one directory per agent), else they are dropped.

    With `tasks`, agents claim the tasks their capabilities (and free GPU memory) fit,
    work on them for a time typical of the kind, record the LLM calls of that work and
    complete or fail them (sim_work.py); state is then busy exactly while they hold tasks.
    """

    def __init__(
        self,
        url: str,
        enrollment_key: str,
        agents: int = 10,
        *,
        prefix: str = "demo",
        fail_rate: float = 0.05,
        silent_rate: float = 0.1,
        interval: float | None = None,
        seed: int | None = None,
        workers: int | None = None,
        timeout: float = 10.0,
        timing: SimTiming | None = None,
        telemetry: bool = True,
        metrics_interval: float = 10.0,
        flush_interval: float | None = None,
        spool_dir: str | None = None,
        tasks: bool = False,
    ):
        if agents < 1:
            raise ValueError("agents must be at least 1")
        if not (0 <= fail_rate <= 1 and 0 <= silent_rate <= 1):
            raise ValueError("fail_rate and silent_rate must be between 0 and 1")
        if interval is not None and interval <= 0:
            raise ValueError("interval must be positive")
        if metrics_interval <= 0 or (flush_interval is not None and flush_interval <= 0):
            raise ValueError("metrics_interval and flush_interval must be positive")
        Client(url)  # fail now, in the caller, on a malformed URL
        self.url = url
        self.enrollment_key = enrollment_key
        self.interval = interval
        self.timeout = timeout
        self.timing = timing or SimTiming()
        self.telemetry = telemetry
        self.metrics_interval = metrics_interval
        self.flush_interval = flush_interval or metrics_interval
        self.spool_dir = spool_dir
        self.tasks = tasks
        self.stats = SimStats()
        self.error: PulseGuardError | None = None
        self._rng = random.Random(seed)
        self.profiles: list[SimProfile] = make_profiles(
            agents, prefix, self._rng, silent_rate=silent_rate, fail_rate=fail_rate
        )
        self.agents = [SimAgent(profile, self) for profile in self.profiles]
        self._workers = workers or min(agents, 16)
        self._heap: list[tuple[float, int, SimAgent, str]] = []
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._stopping = threading.Event()
        self._gave_up = 0
        self._thread: threading.Thread | None = None
        self._pool: ThreadPoolExecutor | None = None

    @property
    def running(self) -> bool:
        """Whether the simulation was started and not yet asked to stop."""
        return self._thread is not None and not self._stopping.is_set()

    def start(self) -> None:
        """Start registering and heartbeating in the background; returns at once."""
        if self._pool is not None:
            raise RuntimeError("A Simulator runs once; create a new one to simulate again")
        self._pool = ThreadPoolExecutor(max_workers=self._workers, thread_name_prefix="pulseguard-sim")
        now = time.monotonic()
        # Spread the first registrations so the server does not take them as one burst,
        # but never longer than one heartbeat interval.
        spread = min(self.timing.start_spread_s, self.interval or self.timing.start_spread_s)
        with self._cond:
            for agent in self.agents:
                due = now + self._rng.uniform(0, spread)
                heapq.heappush(self._heap, (due, next(self._seq), agent, "beat"))
                if agent.work is not None:
                    heapq.heappush(self._heap, (due + 0.5, next(self._seq), agent, "work"))
        self._thread = threading.Thread(target=self._schedule, name="pulseguard-sim-scheduler", daemon=True)
        self._thread.start()
        log.info("Simulating %d agents against %s", len(self.agents), self.url)

    def request_stop(self) -> None:
        """Make `wait()` return; safe from a signal handler (it only sets a flag)."""
        self._stopping.set()

    def wait(self, duration: float | None = None) -> None:
        """Block until `duration` seconds pass, `request_stop()` is called, or every agent gave up."""
        deadline = None if duration is None else time.monotonic() + duration
        # Short waits keep the main thread responsive to signals on every platform.
        while not self._stopping.is_set():
            left = 1.0 if deadline is None else min(1.0, deadline - time.monotonic())
            if left <= 0:
                return
            self._stopping.wait(left)

    def stop(self) -> None:
        """Stop every agent and say goodbye for each one that is registered (clean shutdown)."""
        if self._thread is None:
            return
        self._stopping.set()
        with self._cond:
            self._cond.notify_all()
        self._thread.join()
        assert self._pool is not None
        # Steps under way finish (each is bounded by the client timeout); queued ones are dropped.
        self._pool.shutdown(wait=True, cancel_futures=True)
        with ThreadPoolExecutor(max_workers=self._workers, thread_name_prefix="pulseguard-sim-bye") as pool:
            said = sum(pool.map(SimAgent.goodbye, self.agents))
        self._thread = None
        log.info("Simulation stopped: %d goodbyes; %s", said, self.stats.snapshot())

    def run(self, duration: float | None = None) -> None:
        """start(), wait(duration), stop()."""
        self.start()
        try:
            self.wait(duration)
        finally:
            self.stop()

    def _schedule(self) -> None:
        with self._cond:
            while not self._stopping.is_set():
                if not self._heap:
                    self._cond.wait(0.5)
                    continue
                due, _, agent, chain = self._heap[0]
                delay = due - time.monotonic()
                if delay > 0:
                    # Bounded so a stop request (which cannot notify from a signal handler) is seen soon.
                    self._cond.wait(min(delay, 0.5))
                    continue
                heapq.heappop(self._heap)
                assert self._pool is not None
                self._pool.submit(self._step, agent, chain)

    def _step(self, agent: SimAgent, chain: str = "beat") -> None:
        if self._stopping.is_set():
            return
        try:
            if chain == "beat":
                delay = agent.step(time.monotonic())
            else:
                assert agent.work is not None
                delay = agent.work.step(time.monotonic())
        except Exception:  # one agent's bug must not end the simulation
            log.exception("Simulated agent %s failed a step", agent.profile.name)
            delay = 30.0 if chain == "beat" else 5.0
        if delay is None:
            if chain == "beat":
                self._agent_gave_up(agent)
            return
        with self._cond:
            heapq.heappush(self._heap, (time.monotonic() + delay, next(self._seq), agent, chain))
            self._cond.notify()

    def _agent_gave_up(self, agent: SimAgent) -> None:
        with self._cond:
            self._gave_up += 1
            if self._gave_up == len(self.agents):
                self.error = agent.error
                log.error("Every simulated agent was refused registration; stopping (%s)", agent.error)
                self._stopping.set()
