"""Simulated agents working the real task queue: claim, work a while, complete or fail.

A simulated agent claims with short polls on the simulator's scheduler (a long poll
each would need a thread per agent; a fleet of hundreds must not), then "works" on each
task for a time typical of its kind, records the LLM calls that work made (tagged with
the task id, through its telemetry buffer), keeps the lease (its heartbeats name the
tasks it holds; an explicit renewal when a lease would run short before the next beat)
and completes the task with a plausible result, or fails it the way such work fails:
rate limits, model timeouts, connection errors, its own bugs, GPU memory it cannot get,
a payload it refuses. A flaky agent now and then hangs on a task and loses the lease.

Each attempt is planned with its own Random seeded by (agent seed, task id, attempt):
the same task on the same agent goes the same way whatever else the fleet did.
"""

from __future__ import annotations

import logging
import math
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pulseguard_agent.errors import ERROR_TYPES, PulseGuardError, ServerUnavailable, TaskLost
from pulseguard_agent.sim_fleet import SimProfile
from pulseguard_agent.sim_llm import FakeLLM
from pulseguard_agent.worker import ClaimedTask

if TYPE_CHECKING:
    from pulseguard_agent.sim_agent import SimAgent

log = logging.getLogger(__name__)

Result = Callable[[random.Random, ClaimedTask, SimProfile], dict]

# How work fails, by where it runs: LLM agents meet providers' limits and tools' outages,
# GPU workers meet memory and drivers.
AGENT_ERRORS = (("rate_limit", 0.34), ("timeout", 0.2), ("connection", 0.13), ("agent_error", 0.3), ("rejected", 0.03))
GPU_ERRORS = (("resource", 0.3), ("agent_error", 0.35), ("timeout", 0.15), ("connection", 0.2))
# The LLM call that failed the work, for the error types that come from one.
LLM_ERROR = {"rate_limit": "rate_limit", "timeout": "timeout"}
TOOLS = ("api.github.com", "the search API", "the vector store", "the ticket system", "object storage", "the CI runner")
MESSAGES = {
    "rate_limit": ("{provider} answered 429: rate limit reached for {model} (tokens per minute); retry after {n}s",
                   "{provider} answered 429: too many concurrent requests for {model}"),
    "timeout": ("{model} did not answer within {n} s", "tool call to {tool} timed out after {n} s"),
    "connection": ("connection reset by peer while calling {tool}", "could not connect to {tool}: connection refused",
                   "TLS handshake with {tool} timed out"),
    "agent_error": ("could not parse the model's answer as JSON: expected key 'result'",
                    "tool call apply_patch failed: hunk #2 does not apply", "KeyError: 'choices'",
                    "the model answered in the wrong format three times in a row",
                    "worker process exited with code 137 while loading the batch"),
    "rejected": ("the payload names a repository this agent has no access to",
                 "the payload asks for a language this agent does not handle"),
    "resource": ("CUDA out of memory: tried to allocate {vram} MiB; {free} MiB free on the largest GPU",
                 "NCCL error: unhandled cuda error (out of memory) on GPU {gpu}"),
}


@dataclass(frozen=True)
class KindWork:
    """How a kind of task goes: seconds of work (log-uniform), LLM calls per second of it, its result."""

    seconds: tuple[float, float]
    calls_per_s: float
    result: Result
    fail_factor: float = 1.0


def _common(rng: random.Random, task: ClaimedTask, p: SimProfile) -> dict:
    return {"agent": p.name, "model": p.model}


def _review(rng, task, p):
    verdict = rng.choices(("approve", "request_changes", "comment"), (0.6, 0.3, 0.1))[0]
    return {"verdict": verdict, "comments": rng.randint(0, 12),
            "files_reviewed": int(task.payload.get("files_changed") or rng.randint(1, 30))}


def _patch(rng, task, p):
    return {"branch": f"pg/task-{task.id}", "files_changed": rng.randint(1, 8), "tests_passed": True}


def _tests(rng, task, p):
    return {"tests_added": rng.randint(2, 25), "coverage_delta_pct": round(rng.uniform(0.1, 4.0), 1)}


def _summary(rng, task, p):
    return {"sources_read": int(task.payload.get("sources") or rng.randint(3, 12)),
            "summary_tokens": rng.randint(200, 900)}


def _triage(rng, task, p):
    return {"queue": rng.choice(("billing", "bugs", "accounts", "feature-requests")),
            "priority": rng.choice(("p1", "p2", "p3", "p3", "p4")), "duplicate_of": None}


def _plan(rng, task, p):
    return {"steps": rng.randint(3, 9), "estimate_h": round(rng.uniform(0.5, 16), 1)}


def _embed(rng, task, p):
    return {"vectors": int(task.payload.get("documents") or rng.randint(500, 20000)),
            "dim": 768 if "nomic" in p.model else 1024}


def _infer(rng, task, p):
    prompts = int(task.payload.get("prompts") or rng.randint(50, 2000))
    return {"completions": prompts, "tokens_out": prompts * rng.randint(80, 600)}


def _finetune(rng, task, p):
    return {"steps": rng.randint(400, 4000), "final_loss": round(rng.uniform(0.6, 1.4), 3),
            "adapter": f"lora-{task.id}"}


def _done(rng, task, p):
    return {"ok": True}


KINDS: dict[str, KindWork] = {
    "code.review": KindWork((15, 75), 0.1, _review),
    "code.patch": KindWork((20, 100), 0.1, _patch),
    "tests.write": KindWork((20, 90), 0.1, _tests),
    "research.summarize": KindWork((15, 75), 0.12, _summary),
    "ticket.triage": KindWork((3, 15), 0.3, _triage, fail_factor=0.5),
    "plan.decompose": KindWork((5, 30), 0.15, _plan),
    "embed.batch": KindWork((10, 50), 2.0, _embed),
    "inference.batch": KindWork((20, 90), 1.5, _infer),
    "model.finetune": KindWork((120, 480), 0.0, _finetune, fail_factor=1.5),
}
DEFAULT_WORK = KindWork((5, 40), 0.1, _done)
MAX_CALLS = 60  # per attempt: a long batch is summarised by its first calls
HANG_RATE = 0.03  # per attempt of a flaky agent: it hangs and loses the lease


@dataclass
class Plan:
    """How one attempt goes, decided when it starts."""

    seconds: float  # wall seconds until the outcome (scaled)
    work_s: float  # simulated seconds of work done (unscaled: what the LLM calls span)
    error_type: str | None = None
    message: str = ""
    retryable: bool = True
    hang: bool = False
    result: dict = field(default_factory=dict)


def fail_rate(profile: SimProfile) -> float:
    """A share of attempts this agent fails, fixed by its seed: calm agents a few percent, flaky ones more."""
    fixed = random.Random(profile.seed ^ 0x7A5C)
    return fixed.uniform(0.12, 0.2) if profile.flaky else fixed.uniform(0.02, 0.07)


def plan_attempt(profile: SimProfile, task: ClaimedTask, rng: random.Random, *, rate: float, time_scale: float,
                 gpu: tuple[int | None, int] | None) -> Plan:
    """Draw how this attempt goes. `gpu` is (index, most free MiB) for a GPU task, index None when none had room."""
    work = KINDS.get(task.kind, DEFAULT_WORK)
    lo, hi = work.seconds
    work_s = math.exp(rng.uniform(math.log(lo), math.log(hi)))
    fill = {"provider": profile.provider, "model": profile.model, "n": rng.choice((20, 30, 60, 120)),
            "tool": rng.choice(TOOLS), "vram": task.vram_mb, "free": gpu[1] if gpu else 0,
            "gpu": gpu[0] if gpu and gpu[0] is not None else 0}
    if gpu is not None and gpu[0] is None:
        # The server matched on readings a few seconds old; locally the memory is taken.
        seconds = rng.uniform(1.0, 5.0)
        return Plan(seconds * time_scale, seconds, "resource", MESSAGES["resource"][0].format(**fill))
    forced = task.payload.get("fail")
    if forced:
        error = task.payload.get("error_type") if task.payload.get("error_type") in ERROR_TYPES else "agent_error"
        share = rng.uniform(0.1, 0.5)
        return Plan(work_s * share * time_scale, work_s * share, error, "asked to fail (payload.fail)")
    if profile.flaky and rng.random() < HANG_RATE:
        return Plan(work_s * time_scale, work_s, hang=True, result=_result(work, rng, task, profile, work_s))
    if rng.random() < rate * work.fail_factor:
        errors = GPU_ERRORS if task.resource_class == "gpu" else AGENT_ERRORS
        kinds, weights = zip(*errors)
        error = rng.choices(kinds, weights)[0]
        share = rng.uniform(0.15, 0.9)
        return Plan(work_s * share * time_scale, work_s * share, error, rng.choice(MESSAGES[error]).format(**fill))
    return Plan(work_s * time_scale, work_s, result=_result(work, rng, task, profile, work_s))


def _result(work: KindWork, rng: random.Random, task: ClaimedTask, profile: SimProfile, work_s: float) -> dict:
    return {**work.result(rng, task, profile), **_common(rng, task, profile), "seconds": round(work_s, 1)}


@dataclass(eq=False)
class _Running:
    task: ClaimedTask
    plan: Plan
    rng: random.Random
    started_wall: float
    ends_at: float  # monotonic
    gpu: int | None = None
    recorded: bool = False


class SimWorkload:
    """The tasks one simulated agent holds; `step(now)` is its turn on the simulator's scheduler."""

    def __init__(self, agent: SimAgent):
        self.agent = agent
        self.profile = agent.profile
        self.stats = agent.sim.stats
        self.timing = agent.sim.timing
        self.fail_rate = fail_rate(self.profile)
        self.slots = self.profile.role.task_slots
        self.running: dict[int, _Running] = {}
        self._lock = threading.Lock()
        self._poll_rng = random.Random(self.profile.seed ^ 0x9011)
        self._next_claim_at = 0.0
        self._failures = 0

    # --- what the heartbeat side asks ------------------------------------------------

    def held_ids(self) -> list[int]:
        """Tasks to name in the next heartbeat (a hung one is not renewed: that is how it loses its lease)."""
        with self._lock:
            return sorted(r.task.id for r in self.running.values() if not r.plan.hang)

    def leases(self, answer: dict | None, at: float) -> None:
        """Take a renewal's answer (from a heartbeat or the renew call)."""
        if not answer:
            return
        with self._lock:
            self._leases(answer, at)

    def forget(self) -> None:
        """The process died: its tasks are gone with it (the server gives them out again)."""
        with self._lock:
            for running in list(self.running.values()):
                self._drop(running)

    # --- the turn --------------------------------------------------------------------

    def step(self, now: float) -> float | None:
        """Report what finished, renew what is due, claim if there is room; seconds until the next turn."""
        agent = self.agent
        if agent.status == "gave_up":
            return None
        with self._lock:
            # A silent, crashed or restarting process does nothing; a stalled one only misses beats.
            if agent.status not in ("active", "stalled") or not agent.client.registered:
                return 0.5
            try:
                self._finish_due(now)
                self._renew_due(now)
                if self._may_claim() and now >= self._next_claim_at:
                    self._claim(now)
                self._failures = 0
            except ServerUnavailable as exc:
                self._failures += 1
                delay = min(30.0, 0.5 * 2 ** min(self._failures, 6))
                log.debug("%s: task call failed (%s); next turn in %.1fs", self.profile.name, exc, delay)
                return delay
            except PulseGuardError as exc:
                # A refused token: the heartbeat side registers again; try after that.
                log.debug("%s: task call refused: %s", self.profile.name, exc)
                return 1.0
            return self._next_turn(now)

    def _may_claim(self) -> bool:
        return len(self.running) < self.slots and self.agent.runner.may_take_work

    def _claim(self, now: float) -> None:
        free = self.slots - len(self.running)
        claimed = self.agent.client.claim_tasks(limit=free, wait=0, attempts=1)
        for data in claimed:
            self._start(ClaimedTask.from_claim(data), now)
        if claimed and len(self.running) < self.slots:
            self._next_claim_at = now + 0.2  # more may be waiting
        else:
            self._next_claim_at = now + self._poll_rng.uniform(*self.timing.task_poll_s)

    def _start(self, task: ClaimedTask, now: float) -> None:
        p = self.profile
        rng = random.Random(f"{p.seed}:{task.id}:{task.attempt}")
        gpu = self.agent.host.allocate(int(task.vram_mb or 0)) if task.resource_class == "gpu" else None
        plan = plan_attempt(p, task, rng, rate=self.fail_rate, time_scale=self.timing.task_time_scale, gpu=gpu)
        ends_at = now + plan.seconds
        if plan.hang:
            # It "finishes" well after its lease ran out, and only then finds the task gone.
            ends_at = now + max(plan.seconds, task.attempt_timeout_s * 1.25)
        self.running[task.id] = _Running(task, plan, rng, time.time(), ends_at, gpu[0] if gpu else None)
        self.stats.add("tasks_claimed")
        self.agent.runner.set_task_load(len(self.running))
        log.debug("%s claimed task %s (%s), attempt %d: %s in %.1fs", p.name, task.id, task.kind, task.attempt,
                  plan.error_type or ("hang" if plan.hang else "success"), plan.seconds)

    def _finish_due(self, now: float) -> None:
        client = self.agent.client
        for running in [r for r in self.running.values() if now >= r.ends_at]:
            task, plan = running.task, running.plan
            if not running.recorded:
                running.recorded = True
                self._record_calls(running)
            try:
                if plan.error_type:
                    client.fail_task(task.id, plan.error_type, plan.message, plan.retryable, attempts=1)
                    self.stats.add("tasks_failed")
                    self.stats.add(f"tasks_failed_{plan.error_type}")
                else:
                    client.complete_task(task.id, plan.result, attempts=1)
                    self.stats.add("tasks_succeeded")
            except TaskLost as exc:
                self.stats.add("tasks_lost")
                log.info("%s: task %s was no longer ours when it finished (%s)", self.profile.name, task.id, exc.code)
            except ServerUnavailable:
                running.ends_at = now + 2.0  # report it again on a later turn; the work is done
                self.stats.add("tasks_report_retries")
                raise
            self._drop(running)

    def _renew_due(self, now: float) -> None:
        held = [r for r in self.running.values() if not r.plan.hang]
        if held and min(r.task.renew_due_at for r in held) <= now:
            answer = self.agent.client.renew_tasks([r.task.id for r in held], attempts=1)
            self._leases(answer, now)

    def _leases(self, answer: dict, at: float) -> None:
        for task_id in answer.get("renewed") or []:
            if task_id in self.running:
                running = self.running[task_id]
                running.task.renewed_at = max(running.task.renewed_at, at)
        for task_id in answer.get("lost") or []:
            running = self.running.get(task_id)
            if running is not None:
                # Cancelled, reassigned or isolated: a well-behaved agent stops the work at once.
                self.stats.add("tasks_lost")
                log.info("%s: task %s was lost; stopping work on it", self.profile.name, task_id)
                self._drop(running)

    def _drop(self, running: _Running) -> None:
        self.running.pop(running.task.id, None)
        if running.gpu is not None:
            self.agent.host.release(running.gpu, int(running.task.vram_mb or 0))
        self.agent.runner.set_task_load(len(self.running))

    def _next_turn(self, now: float) -> float:
        due = [r.ends_at for r in self.running.values()]
        due += [r.task.renew_due_at for r in self.running.values() if not r.plan.hang]
        if self._may_claim():
            due.append(self._next_claim_at)
        # At least every few seconds: a drain, a release or a re-registration changes what to do.
        return min(max(min(due, default=now + 5.0) - now, 0.05), 5.0)

    # --- telemetry of the work -------------------------------------------------------

    def _record_calls(self, running: _Running) -> None:
        """The LLM calls this attempt made, spread over the time it took, tagged with the task id."""
        telemetry = self.agent.telemetry
        work = KINDS.get(running.task.kind, DEFAULT_WORK)
        if telemetry is None or work.calls_per_s <= 0:
            return
        plan, rng, task = running.plan, running.rng, running.task
        n = max(1, min(MAX_CALLS, round(plan.work_s * work.calls_per_s * rng.uniform(0.7, 1.3))))
        llm = FakeLLM(self.profile, rng)
        llm.error_rate = 0.0
        start, elapsed = running.started_wall, max(time.time() - running.started_wall, 0.001)
        workflow = str(task.payload.get("workflow") or "") or None
        failing = LLM_ERROR.get(plan.error_type or "")
        for i in range(n):
            ts = start + elapsed * (i + 1) / (n + 1)
            last = i == n - 1
            try:
                if not last and rng.random() < 0.04:  # a provider hiccup, retried by the agent
                    telemetry.buffer.add(llm.task_call(ts, task_id=str(task.id), workflow_id=workflow,
                                                       error_type=rng.choice(("server_error", "rate_limit"))))
                telemetry.buffer.add(llm.task_call(ts, task_id=str(task.id), workflow_id=workflow,
                                                   error_type=failing if last else None))
            except ValueError:  # a sample the buffer refuses is a simulator bug, not the agent's
                log.exception("%s: bad simulated LLM call", self.profile.name)
                return
