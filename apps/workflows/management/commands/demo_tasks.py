"""`manage.py demo_tasks`: a steady stream of demo tasks for `make run`, through the real service.

The kinds are what the simulated fleet can run (pulseguard_agent/sim_fleet.py roles,
sim_work.py kinds): code reviews and patches, tests, research summaries, ticket triage
and plans for the LLM agents; embedding batches, batch inference and the odd fine-tune
for the GPU workers (explicit VRAM, so the claim matches free GPU memory); and the
Celery skills demo.echo and demo.sleep. Arrivals are Poisson at --rate per second, with
mixed priorities, a few idempotency keys that repeat (the repeat gets the first task)
and a few tasks that always fail, so retries and failures show too. A kind with
--max-queued tasks already waiting is skipped until the fleet catches up, so the queue
never grows without bound when nobody can run a kind.
"""

from __future__ import annotations

import random
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from django.core.management.base import BaseCommand, CommandError
from django.db import Error as DatabaseError
from django.db import close_old_connections
from django.db.models import Count
from django.utils import timezone

from apps.core.errors import ApplicationError
from apps.workflows import selectors, services

REPOS = ("acme/api", "acme/web", "acme/billing", "acme/infra", "acme/mobile", "acme/data-pipeline")
QUERIES = ("vector database pricing 2025", "EU AI Act obligations for providers", "GPU spot prices by region",
           "competitor changelog last 30 days", "open-weight coding models compared", "SOC 2 evidence automation")
GOALS = ("migrate billing to usage-based pricing", "add SSO to the admin console", "cut p95 API latency by half",
         "launch the mobile app in Japan", "move CI to ephemeral runners")
COLLECTIONS = ("support-articles", "product-docs", "slack-archive", "code-search", "contracts")
BACKLOG_REFRESH_S = 5.0
REPORT_EVERY_S = 60.0


@dataclass(frozen=True)
class DemoKind:
    """One kind in the stream: how often, who can run it, what its payload looks like."""

    kind: str
    weight: float
    capabilities: tuple[str, ...] = ()
    resources: dict | None = None
    models: tuple[str, ...] = ()
    payload: Callable[[random.Random], dict] = field(default=lambda rng: {})
    key: Callable[[random.Random, dict], str | None] | None = None  # an idempotency key, for some
    attempt_timeout_s: int = 120
    max_attempts: int = 3
    queued_timeout_s: int | None = 900
    poison_rate: float = 0.03  # share that always fails (payload "fail"), to show retries running out


def _hour() -> str:
    return timezone.now().strftime("%Y%m%d%H")


CATALOG: tuple[DemoKind, ...] = (
    DemoKind("code.review", 1.0, ("code-review",), models=("claude-opus-4", "gpt-4o"),
             payload=lambda r: {"repo": r.choice(REPOS), "pr": r.randint(100, 999), "files_changed": r.randint(1, 40)},
             # One review per pull request: a second request for it is the first task.
             key=lambda r, p: f"review-{p['repo']}-{p['pr']}" if r.random() < 0.3 else None),
    DemoKind("code.patch", 0.8, ("code-gen", "git"), models=("claude-sonnet-4", "gpt-4.1"),
             payload=lambda r: {"repo": r.choice(REPOS), "issue": r.randint(1000, 9999),
                                "language": r.choice(("python", "typescript"))}),
    DemoKind("tests.write", 0.8, ("test-gen",), models=("gpt-4o-mini",),
             payload=lambda r: {"repo": r.choice(REPOS), "module": r.choice(("auth", "billing", "search", "sync"))}),
    DemoKind("research.summarize", 2.5, ("web-search", "summarize"), models=("gpt-4o", "gemini-2.5-flash"),
             payload=lambda r: {"query": r.choice(QUERIES), "sources": r.randint(3, 12)}),
    DemoKind("ticket.triage", 3.0, ("ticket-triage",), models=("claude-3-5-haiku",),
             payload=lambda r: {"ticket": f"SUP-{r.randint(1, 400)}", "channel": r.choice(("email", "chat", "web"))},
             key=lambda r, p: f"triage-{_hour()}-{p['ticket']}" if r.random() < 0.4 else None),
    DemoKind("plan.decompose", 1.5, ("planning",), models=("gpt-4o",), payload=lambda r: {"goal": r.choice(GOALS)}),
    DemoKind("embed.batch", 1.5, ("embeddings",), resources={"class": "gpu", "vram_mb": 8000},
             payload=lambda r: {"collection": r.choice(COLLECTIONS), "documents": r.randint(500, 20000)},
             attempt_timeout_s=300),
    DemoKind("inference.batch", 1.0, ("inference",), resources={"class": "gpu", "vram_mb": 16000},
             payload=lambda r: {"model": "llama-3.1-70b", "prompts": r.randint(50, 2000)}, attempt_timeout_s=300),
    DemoKind("model.finetune", 0.1, ("batch", "gpu"), resources={"class": "gpu", "vram_mb": 60000},
             payload=lambda r: {"base_model": "llama-3.1-8b", "method": "lora", "epochs": r.randint(1, 3)},
             attempt_timeout_s=900, max_attempts=2, queued_timeout_s=1800, poison_rate=0.0),
    # Celery skills (apps/workflows/skills.py): run by the worker `make run` starts.
    DemoKind("demo.echo", 1.0, payload=lambda r: {"message": r.choice(("hello", "ping", "status?"))},
             attempt_timeout_s=60, poison_rate=0.1),
    DemoKind("demo.sleep", 0.7, payload=lambda r: {"seconds": round(r.uniform(0.5, 6.0), 1)}, attempt_timeout_s=60,
             poison_rate=0.0),
)
PRIORITIES = ((0, 60), (5, 12), (10, 12), (50, 8), (100, 3), (-10, 5))
# The weights roughly match what the `make run` fleet (24 agents, seed 7) can work through at
# 0.5 tasks/s: two reviewers, two coders, six researchers, six embedding GPUs, and so on.


def demo_task_fields(spec: DemoKind, rng: random.Random) -> dict:
    """Keyword arguments of `services.task_create` for one task of this kind."""
    payload = spec.payload(rng)
    if rng.random() < spec.poison_rate:
        payload["fail"] = True
    values, weights = zip(*PRIORITIES)
    fields = {
        "kind": spec.kind, "payload": payload, "required_capabilities": list(spec.capabilities),
        "priority": rng.choices(values, weights)[0], "attempt_timeout_s": spec.attempt_timeout_s,
        "max_attempts": spec.max_attempts, "queued_timeout_s": spec.queued_timeout_s,
        "backoff_base_s": 2.0, "backoff_max_s": 60.0,
    }
    if spec.resources:
        fields["resources"] = dict(spec.resources)
    if spec.models:
        fields["model"] = rng.choice(spec.models)
    key = spec.key(rng, payload) if spec.key else None
    if key:
        fields["idempotency_key"] = key
    return fields


class Command(BaseCommand):
    help = "Queue a steady stream of demo tasks (the kinds the simulated fleet runs) until stopped."

    def add_arguments(self, parser):
        parser.add_argument("--rate", type=float, default=0.5, help="tasks per second, on average (default 0.5)")
        parser.add_argument("--max-queued", type=int, default=25,
                            help="skip a kind while this many of it wait in the queue (default 25)")
        parser.add_argument("--count", type=int, default=None,
                            help="stop after this many arrivals, queued or not (default: never)")
        parser.add_argument("--seed", type=int, default=None, help="same seed, same stream of tasks")

    def handle(self, *args, rate, max_queued, count, seed, verbosity=1, **options):
        if not 0 < rate <= 100:
            raise CommandError("--rate must be more than 0 and at most 100 tasks per second")
        if max_queued < 1:
            raise CommandError("--max-queued must be at least 1")
        self.verbosity = verbosity
        self.stop = stop = threading.Event()
        previous = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                previous[sig] = signal.signal(sig, lambda signum, frame: stop.set())
        try:
            self._stream(rate, max_queued, count, seed)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _stream(self, rate: float, max_queued: int, count: int | None, seed: int | None) -> None:
        stop = self.stop
        self.rng = random.Random(seed)
        self.max_queued = max_queued
        self.counts: Counter[str] = Counter()
        self._backlog: dict[str, int] = {}
        self._backlog_at = -BACKLOG_REFRESH_S
        self.stderr.write(f"Queueing demo tasks at about {rate:g}/s (Ctrl-C stops)")
        reported_at = time.monotonic()
        arrivals = 0
        while not stop.is_set() and (count is None or arrivals < count):
            self._one()
            arrivals += 1
            if time.monotonic() - reported_at >= REPORT_EVERY_S:
                reported_at = time.monotonic()
                self._report()
            if count is None or arrivals < count:
                stop.wait(min(self.rng.expovariate(rate), 30.0))
        self._report()

    def _one(self) -> None:
        weights = [spec.weight for spec in CATALOG]
        spec = self.rng.choices(CATALOG, weights)[0]
        fields = demo_task_fields(spec, self.rng)
        try:
            if self._queued(spec.kind) >= self.max_queued:
                self.counts["skipped"] += 1
                return
            task, created = services.task_create(**fields)
        except ApplicationError as exc:  # impossible_resources before the GPU fleet registered, say
            self.counts["refused"] += 1
            self.stderr.write(f"{spec.kind} refused: {exc.message}")
            return
        except DatabaseError as exc:  # the database restarting under `make run`: wait and go on
            self.counts["errors"] += 1
            self.stderr.write(f"database error, retrying shortly: {exc}")
            close_old_connections()
            self.stop.wait(5)
            return
        self.counts["created" if created else "deduplicated"] += 1
        if created:
            self._backlog[spec.kind] = self._backlog.get(spec.kind, 0) + 1
        if self.verbosity >= 2:
            self.stdout.write(f"{'queued' if created else 'already queued'} #{task.pk} {task.kind} "
                              f"(priority {task.priority}, {task.resource_class})")

    def _queued(self, kind: str) -> int:
        """Tasks of `kind` waiting, from a count refreshed every few seconds (one query, not one per task)."""
        if time.monotonic() - self._backlog_at >= BACKLOG_REFRESH_S:
            rows = (selectors.task_list(state=["queued"]).order_by().values("kind").annotate(n=Count("id"))
                    .values_list("kind", "n"))
            self._backlog = dict(rows)
            self._backlog_at = time.monotonic()
        return self._backlog.get(kind, 0)

    def _report(self) -> None:
        c = self.counts
        self.stdout.write(f"demo tasks: {c['created']} queued, {c['deduplicated']} deduplicated by idempotency key, "
                          f"{c['skipped']} skipped (backlog), {c['refused']} refused")
