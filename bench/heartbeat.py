#!/usr/bin/env python
"""bench/heartbeat: a simulated fleet driving the heartbeat endpoint, beside a naive baseline.

    make bench                                   # embedded PostgreSQL/Redis if unset
    make bench BENCH_ARGS="--workers 1,2,3"
    DATABASE_URL=postgres://... REDIS_URL=redis://... python bench/heartbeat.py [flags]

What it does, in one invocation:

1. migrates, replaces the bench fleet (agents named ``bench-0000`` …) by registering
   ``--agents`` agents in-process through ``services.agent_register``;
2. starts the real server as a subprocess: uvicorn serving ``pulseguard.asgi:application``
   (the product, heartbeat fast path included) with ``bench.settings``: the project's
   settings and middleware, quiet logs, plus ``/bench/naive/agents/<id>/heartbeat``, a
   textbook DRF + ORM endpoint doing the same writes (bench/naive.py);
3. checks both endpoints answer the same JSON (a pending command is delivered once);
4. drives both with raw keep-alive HTTP/1.1 from one asyncio process, alternating
   ours / naive after a warm-up, in two modes:
   * ``max``   ``--concurrency`` connections, closed loop, round-robin over the fleet;
   * ``rate``  open loop at ``--rate``/s (each connection has a schedule; latency counts
     from the scheduled time, so queueing shows);
5. prints heartbeats/s, p50/p99, errors, CPU per request (server, PostgreSQL, client)
   and new DB sessions per request, the ratio ours/naive, and the DESIGN targets;
6. checks that no request failed, that no uvicorn worker died or was restarted, and that,
   in every phase, every agent that got a 200 has a newer last_heartbeat_at (exit status 1
   if not). Timings are figures, never assertions.

bench/profile_heartbeat.py profiles one worker with py-spy. Figures: bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import itertools
import json
import os
import platform
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# Before Django loads: our settings module, production mode, quiet.
os.environ["DJANGO_SETTINGS_MODULE"] = "bench.settings"
os.environ["DJANGO_DEBUG"] = "false"
os.environ.setdefault("DJANGO_SECRET_KEY", "bench-only-secret-key-" + "x" * 40)
os.environ["PULSEGUARD_LOG_LEVEL"] = "WARNING"
os.environ.setdefault("PYTHONUNBUFFERED", "1")

PREFIX = "bench-"
DESIGN_RATE = 2000  # heartbeats/s sustained
DESIGN_P99_MS = 50  # at 1,000/s
DESIGN_RATIO = 6  # ours / naive


# --- setup (in-process Django) -----------------------------------------------------------

def use_bench_database() -> str:
    """Point DATABASE_URL at a database of its own on the same server, created if missing.

    `make bench` hands us the development database; 1,000 bench agents do not belong on a
    developer's dashboard. A database whose name ends in "bench" is used as it is.
    """
    url = os.environ["DATABASE_URL"]
    base, sep, query = url.partition("?")
    head, _, name = base.rpartition("/")
    if name.endswith("bench"):
        return name
    target = f"{name}_bench"
    import environ
    import psycopg

    cfg = environ.Env.db_url_config(url)
    params = {"dbname": cfg.get("NAME"), "user": cfg.get("USER") or None, "password": cfg.get("PASSWORD") or None,
              "host": cfg.get("HOST") or None, "port": cfg.get("PORT") or None}
    with psycopg.connect(**{k: v for k, v in params.items() if v}, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (target,)).fetchone():
            conn.execute(f'CREATE DATABASE "{target}"')
    os.environ["DATABASE_URL"] = f"{head}/{target}{sep}{query}"
    return target


def django_setup() -> None:
    if not os.environ.get("DATABASE_URL") or not os.environ.get("REDIS_URL"):
        raise SystemExit(
            "DATABASE_URL and REDIS_URL must be set: run `make bench` (starts embedded PostgreSQL/Redis), "
            "or set them, e.g. DATABASE_URL=postgres://postgres@127.0.0.1:5432/pulseguard_bench "
            "REDIS_URL=redis://127.0.0.1:6379/5"
        )
    use_bench_database()
    # Live updates of bench agents (rare: status changes, commands) stay off the dev dashboard.
    os.environ.setdefault("PULSEGUARD_REDIS_PREFIX", "pgbench")
    import django

    django.setup()


@dataclass
class Fleet:
    ids: list[str]
    tokens: list[str]


def fleet_create(n: int) -> Fleet:
    from django.core.management import call_command

    from apps.agents import services
    from apps.agents.models import Agent, EnrollmentKey

    call_command("migrate", "--noinput", verbosity=0)
    Agent.objects.filter(name__startswith=PREFIX).delete()
    EnrollmentKey.objects.filter(name="bench-fleet").delete()
    _, key = services.enrollment_key_create(name="bench-fleet")
    ids, tokens = [], []
    for i in range(n):
        agent, token = services.agent_register(
            enrollment_key=key, name=f"{PREFIX}{i:04d}", kind="agent", capabilities=["bench"],
            labels={"fleet": "bench"}, version="bench", host={"hostname": f"bench-host-{i % 50}", "cpu_count": 8},
        )
        ids.append(str(agent.pk))
        tokens.append(token)
    # Steady state of a working fleet: agents already report "busy", so a heartbeat changes
    # nothing a browser shows and publishes no live update (as in production between changes).
    Agent.objects.filter(name__startswith=PREFIX).update(state="busy")
    return Fleet(ids, tokens)


def db_now():
    from django.db import connection

    with connection.cursor() as cur:
        cur.execute("SELECT now()")
        return cur.fetchone()[0]


def db_sessions() -> int:
    """Sessions ever opened to this database (pg_stat_database.sessions, PostgreSQL ≥ 14)."""
    from django.db import connection

    with connection.cursor() as cur:
        cur.execute("SELECT sessions FROM pg_stat_database WHERE datname = current_database()")
        row = cur.fetchone()
    return int(row[0]) if row and row[0] is not None else -1


def fleet_advanced_since(since) -> int:
    from apps.agents.models import Agent

    return Agent.objects.filter(name__startswith=PREFIX, last_heartbeat_at__gte=since).count()


def fleet_status_counts() -> dict:
    from django.db.models import Count

    from apps.agents.models import Agent

    rows = Agent.objects.filter(name__startswith=PREFIX).values("status").annotate(n=Count("id"))
    return {r["status"]: r["n"] for r in rows}


def status_events_since(since) -> int:
    from apps.agents.models import AgentEvent

    return AgentEvent.objects.filter(
        agent__name__startswith=PREFIX, kind="status_changed", created_at__gte=since
    ).count()


def command_issue(agent_id: str) -> str:
    from apps.agents import services
    from apps.agents.models import Agent

    command = services.agent_command_issue(
        agent=Agent.objects.get(pk=agent_id), type="restart", args={"reason": "bench parity check"}
    )
    return str(command.pk)


# --- the server ----------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


APP = "pulseguard.asgi:application"  # the product's ASGI app, heartbeat fast path included


class Server:
    def __init__(self, *, workers: int, port: int):
        self.workers, self.port = workers, port
        # The server's own output (warnings, 500 tracebacks) goes to a file, summarised on problems.
        self.log_path = Path(tempfile.gettempdir()) / f"pulseguard-bench-server-{os.getpid()}-{workers}w.log"
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", APP, "--host", "127.0.0.1", "--port", str(port),
             "--workers", str(workers), "--no-access-log", "--lifespan", "off", "--log-level", "info"],
            cwd=ROOT, env=dict(os.environ), start_new_session=True, stdout=self.log, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                raise SystemExit(f"uvicorn exited with {self.proc.returncode} before answering")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise SystemExit("uvicorn did not answer /healthz within 60 s")
                time.sleep(0.2)
        # With several workers the first answer can come from the first one up.
        time.sleep(1.0 if workers > 1 else 0.2)
        self.started_workers = set(self.worker_pids())

    def health(self) -> str:
        """'' while the server and the workers it started are all up; else what changed."""
        if self.proc.poll() is not None:
            return f"uvicorn exited with {self.proc.returncode} during the run"
        now = set(self.worker_pids())
        if now != self.started_workers:
            gone = sorted(self.started_workers - now)
            self.started_workers = now  # say it once
            return f"uvicorn worker(s) {gone} died or were restarted (a hang or a crash)"
        return ""

    def pids(self) -> list[int]:
        import psutil

        try:
            root = psutil.Process(self.proc.pid)
            return [root.pid] + [c.pid for c in root.children(recursive=True)]
        except psutil.Error:
            return []

    def worker_pids(self) -> list[int]:
        import psutil

        try:
            children = psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.Error:
            return []
        # uvicorn --workers N: a supervisor plus N spawned workers (plus a resource tracker).
        workers = [c.pid for c in children if "spawn_main" in " ".join(c.cmdline())]
        return workers or [self.proc.pid]

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.close()

    def error_summary(self, limit: int = 5) -> list[str]:
        """The most frequent final exception lines in the server's log, and uvicorn's worker deaths and signals."""
        counts: dict[str, int] = {}
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return []
        for line in lines:
            try:
                record = json.loads(line)
            except ValueError:
                # uvicorn's own lines: a worker that died, a signal from outside
                if any(w in line for w in ("died", "Received SIG", "not ready", "failed to start")):
                    counts[line.strip()[:200]] = counts.get(line.strip()[:200], 0) + 1
                continue
            if not isinstance(record, dict):
                continue
            if record.get("level") not in ("error", "critical"):
                continue
            exc = (record.get("exception") or record.get("event") or "").strip().splitlines()
            key = exc[-1][:200] if exc else str(record.get("event"))[:200]
            counts[key] = counts.get(key, 0) + 1
        return [f"{n}× {k}" for k, n in sorted(counts.items(), key=lambda kv: -kv[1])[:limit]]


# --- CPU accounting --------------------------------------------------------------------------

def _cpu(pid: int) -> float:
    import psutil

    try:
        t = psutil.Process(pid).cpu_times()
        return t.user + t.system
    except psutil.Error:
        return 0.0


def postmaster_children_cpu() -> float:
    """CPU of exited PostgreSQL backends (reaped by the postmaster), any database."""
    import psutil

    total = 0.0
    for p in psutil.process_iter(["name", "ppid"]):
        try:
            if p.info["name"] in ("postgres", "postmaster") and psutil.Process(p.info["ppid"]).name() not in (
                "postgres", "postmaster"
            ):
                t = p.cpu_times()
                total += t.children_user + t.children_system
        except psutil.Error:
            continue
    return total


def backends_cpu() -> dict[int, float]:
    """CPU seconds of each live backend connected to this database (not other databases)."""
    import psutil
    from django.db import connection

    with connection.cursor() as cur:
        cur.execute("SELECT pid FROM pg_stat_activity WHERE datname = current_database()")
        pids = [r[0] for r in cur.fetchall()]
    out = {}
    for pid in pids:
        try:
            t = psutil.Process(pid).cpu_times()
            out[pid] = t.user + t.system
        except psutil.Error:
            continue
    return out


@dataclass
class CpuSnap:
    server: float
    backends: dict
    reaped: float
    client: float
    sessions: int

    @classmethod
    def take(cls, server: Server) -> CpuSnap:
        return cls(
            server=sum(_cpu(pid) for pid in server.pids()),
            backends=backends_cpu(),
            reaped=postmaster_children_cpu(),
            client=time.process_time(),
            sessions=db_sessions(),
        )

    def db_since(self, before: CpuSnap) -> float:
        """PostgreSQL CPU spent for this database between two snapshots: its live backends,
        plus, when backends came and went (no pool), the time of reaped backends (which
        also counts other databases' short sessions: an over-estimate, flagged in the table)."""
        live = sum(cpu - before.backends.get(pid, 0.0) for pid, cpu in self.backends.items())
        churn = self.sessions - before.sessions > 1
        return live + ((self.reaped - before.reaped) if churn else 0.0)


# --- the load generator ------------------------------------------------------------------------

def build_requests(fleet: Fleet, *, path: str, port: int) -> list[bytes]:
    rnd = random.Random(7)
    out = []
    for agent_id, token in zip(fleet.ids, fleet.tokens):
        total = 64 * 2**30
        body = json.dumps(
            {
                "state": "busy",
                "readings": {
                    "cpu_percent": round(rnd.uniform(1, 95), 1),
                    "memory_used_bytes": rnd.randrange(2**30, total),
                    "memory_total_bytes": total,
                },
                "latency_ms": round(rnd.uniform(0.5, 20), 2),
            },
            separators=(",", ":"),
        ).encode()
        head = (
            f"POST {path.format(id=agent_id)} HTTP/1.1\r\n"
            f"Host: 127.0.0.1:{port}\r\n"
            f"Authorization: Bearer {token}\r\n"
            "Content-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        out.append(head + body)
    return out


class HttpConn(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection, one request in flight, minimal parsing."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.waiter: asyncio.Future | None = None
        self.need = -1
        self.body_at = 0
        self.status = 0
        self.transport = None

    def connection_made(self, transport) -> None:
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if self.need < 0:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buf[:end]).lower()
            self.status = int(head[9:12])
            at = head.find(b"\ncontent-length:")
            if at < 0:
                self._fail(ConnectionError("response without Content-Length"))
                return
            at += 16
            stop = head.find(b"\r", at)
            self.body_at = end + 4
            self.need = self.body_at + int(head[at : stop if stop > 0 else len(head)])
        if len(self.buf) >= self.need:
            body = bytes(self.buf[self.body_at : self.need])
            del self.buf[: self.need]
            self.need = -1
            waiter, self.waiter = self.waiter, None
            if waiter is not None and not waiter.done():
                waiter.set_result((self.status, body))

    def _fail(self, exc: Exception) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc) -> None:
        self._fail(exc or ConnectionError("connection closed"))

    def request(self, data: bytes) -> asyncio.Future:
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(data)
        return self.waiter


async def _connect(port: int) -> HttpConn:
    _, conn = await asyncio.get_running_loop().create_connection(HttpConn, "127.0.0.1", port)
    return conn


@dataclass
class PhaseResult:
    label: str
    mode: str
    wall: float = 0.0
    ok: int = 0
    errors: int = 0
    latencies: list[float] = field(default_factory=list)
    first_error: str = ""
    scheduled: int = 0  # rate mode: requests whose time came within the window
    cpu_server: float = 0.0
    cpu_db: float = 0.0
    cpu_client: float = 0.0
    new_sessions: int = 0
    advanced: int = 0
    ok_agents: set = field(default_factory=set)  # indexes of agents that got a 200

    @property
    def rate(self) -> float:
        return self.ok / self.wall if self.wall else 0.0

    def pct(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        lat = sorted(self.latencies)
        return lat[min(len(lat) - 1, int(q * len(lat)))] * 1000


async def drive(port: int, reqs: list[bytes], *, mode: str, duration: float, concurrency: int, rate: float,
                result: PhaseResult) -> None:
    conns = await asyncio.gather(*(_connect(port) for _ in range(concurrency)))
    n = len(reqs)
    clock = time.perf_counter  # all timing on one clock; the loop's timers only for sleeping
    start = clock() + 0.05
    end = start + duration
    counter = itertools.count(random.randrange(n))
    lat = result.latencies

    ok_agents = result.ok_agents

    async def reconnect() -> HttpConn | None:
        """A new connection, retried until the window closes (None then); each failure is an error."""
        delay = 0.05
        while True:
            try:
                return await _connect(port)
            except OSError as exc:
                result.errors += 1
                result.first_error = result.first_error or f"reconnect: {type(exc).__name__}: {exc}"
            if clock() + delay >= end:
                return None
            await asyncio.sleep(delay)
            delay = min(2 * delay, 1.0)

    async def one(conn: HttpConn, i: int, t0: float) -> HttpConn | None:
        try:
            status, body = await conn.request(reqs[i])
        except Exception as exc:  # connection dropped: count it, reconnect
            result.errors += 1
            result.first_error = result.first_error or f"{type(exc).__name__}: {exc}"
            return await reconnect()
        lat.append(clock() - t0)
        if status == 200:
            result.ok += 1
            ok_agents.add(i)
        else:
            result.errors += 1
            result.first_error = result.first_error or f"HTTP {status}: {body[:300]!r}"
        return conn

    async def closed_loop(conn: HttpConn) -> None:
        await asyncio.sleep(max(0.0, start - clock()))
        while conn is not None and clock() < end:
            conn = await one(conn, next(counter) % n, clock())

    async def open_loop(conn: HttpConn, k: int) -> None:
        # Connection k owns slots k, k+C, k+2C …; slot j is due at start + j/rate.
        j = k
        while True:
            due = start + j / rate
            if due >= end:
                return
            now = clock()
            if now >= end:  # fell behind so far that the window closed: the rest never went out
                return
            if due > now:
                await asyncio.sleep(due - now)
            conn = await one(conn, j % n, due)
            if conn is None:
                return
            j += concurrency

    if mode == "max":
        await asyncio.gather(*(closed_loop(c) for c in conns))
    else:
        await asyncio.gather(*(open_loop(c, k) for k, c in enumerate(conns)))
        # every slot due in the window, sent or not
        result.scheduled = int(duration * rate)
    result.wall = max(clock(), end) - start
    for c in conns:  # the first connections (replacements close with the loop)
        if c.transport is not None:
            c.transport.close()


def run_phase(server: Server, reqs: list[bytes], *, label: str, mode: str, args) -> PhaseResult:
    try:
        import uvloop

        loop_factory = uvloop.new_event_loop
    except ImportError:  # pragma: no cover
        loop_factory = None
    result = PhaseResult(label=label, mode=mode)
    since = db_now()
    before = CpuSnap.take(server)
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(drive(server.port, reqs, mode=mode, duration=args.duration, concurrency=args.concurrency,
                         rate=args.rate, result=result))
    after = CpuSnap.take(server)
    result.cpu_server = after.server - before.server
    result.cpu_db = after.db_since(before)
    result.cpu_client = after.client - before.client
    result.new_sessions = after.sessions - before.sessions  # our own check queries reuse one session
    result.advanced = fleet_advanced_since(since)
    return result


# --- parity: same JSON out -----------------------------------------------------------------------

def parity_check(port: int, fleet: Fleet) -> list[str]:
    """Each endpoint delivers a pending command once, in the same shape."""
    problems = []
    shapes = {}
    for name, path, i in (("ours", OURS, 0), ("naive", NAIVE, 1)):
        agent_id, token = fleet.ids[i], fleet.tokens[i]
        command_id = command_issue(agent_id)
        bodies = []
        for _ in range(2):
            req = urllib.request.Request(
                f"http://127.0.0.1:{port}{path.format(id=agent_id)}", method="POST",
                data=json.dumps({"state": "busy", "readings": {"cpu_percent": 5.0}}).encode(),
                headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
            )
            with urllib.request.urlopen(req, timeout=10) as resp:
                bodies.append(json.loads(resp.read()))
        first, second = bodies
        if [c["id"] for c in first["commands"]] != [command_id]:
            problems.append(f"{name}: first heartbeat did not deliver the pending command: {first}")
        if second["commands"]:
            problems.append(f"{name}: a command was delivered twice: {second}")
        shapes[name] = (
            sorted(first), first["status"], first["heartbeat_interval_s"],
            [(sorted(c), c["type"], c["args"]) for c in first["commands"]],
        )
        shapes[name + "_example"] = first
    if shapes["ours"] != shapes["naive"]:
        problems.append(f"response shapes differ: ours {shapes['ours']} naive {shapes['naive']}")
    ours_at = shapes["ours_example"]["commands"][0]["issued_at"] if shapes["ours_example"]["commands"] else ""
    naive_at = shapes["naive_example"]["commands"][0]["issued_at"] if shapes["naive_example"]["commands"] else ""
    print(f"  parity: both deliver a pending command once, same keys, status and command; "
          f"issued_at ours {ours_at!r} vs naive {naive_at!r}")
    return problems


OURS = "/api/v1/agents/{id}/heartbeat"
NAIVE = "/bench/naive/agents/{id}/heartbeat"


# --- report -------------------------------------------------------------------------------------

def machine() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} CPUs ({model}), Python {platform.python_version()}, {platform.system()} {platform.release()}"


def merge(results: list[PhaseResult]) -> PhaseResult:
    m = PhaseResult(label=results[0].label, mode=results[0].mode)
    for r in results:
        m.wall += r.wall
        m.ok += r.ok
        m.errors += r.errors
        m.latencies += r.latencies
        m.first_error = m.first_error or r.first_error
        m.scheduled += r.scheduled
        m.cpu_server += r.cpu_server
        m.cpu_db += r.cpu_db
        m.cpu_client += r.cpu_client
        m.new_sessions += r.new_sessions
    return m


def table(rows: list[PhaseResult], args) -> str:
    head = ("path", "mode", "rate /s", "p50 ms", "p99 ms", "errors", "server CPU ms/req", "PG CPU ms/req",
            "client CPU %", "new DB sessions/req")
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(" --- " for _ in head) + "|"]
    for r in rows:
        n = max(r.ok + r.errors, 1)
        mode = f"max, {args.concurrency} conns" if r.mode == "max" else f"fixed {args.rate:g}/s"
        rate = f"{r.rate:,.0f}"
        if r.mode == "rate" and r.scheduled:
            rate += f" of {r.scheduled / r.wall:,.0f}" if r.ok < 0.98 * r.scheduled else ""
        lines.append("| " + " | ".join((
            r.label, mode, rate, f"{r.pct(0.50):.1f}", f"{r.pct(0.99):.1f}", str(r.errors),
            f"{1000 * r.cpu_server / n:.2f}", f"{1000 * r.cpu_db / n:.2f}", f"{100 * r.cpu_client / r.wall:.0f}",
            f"{r.new_sessions / n:.2f}",
        )) + " |")
    return "\n".join(lines)


def verdict(ours_max: PhaseResult, naive_max: PhaseResult, ours_rate: PhaseResult, naive_rate: PhaseResult, args) -> str:
    ratio = ours_max.rate / naive_max.rate if naive_max.rate else float("inf")
    p99 = ours_rate.pct(0.99)
    out = [
        f"ours/naive, max throughput: {ratio:.2f}× ({ours_max.rate:,.0f} vs {naive_max.rate:,.0f} heartbeats/s)",
        f"ours/naive, p99 at {args.rate:g}/s: {p99:.1f} ms vs {naive_rate.pct(0.99):.1f} ms",
        "DESIGN targets (figures, not assertions):",
        f"  ≥ {DESIGN_RATE:,}/s sustained: {ours_max.rate:,.0f}/s → "
        + ("met" if ours_max.rate >= DESIGN_RATE else f"not met ({ours_max.rate / DESIGN_RATE:.0%} of target)"),
        f"  p99 ≤ {DESIGN_P99_MS} ms at 1,000/s: {p99:.1f} ms at {ours_rate.rate:,.0f}/s → "
        + ("met" if p99 <= DESIGN_P99_MS and ours_rate.ok >= 0.98 * ours_rate.scheduled else "not met")
        + ("" if args.rate == 1000 else f" (ran at --rate {args.rate:g})"),
        f"  ≥ {DESIGN_RATIO}× the naive endpoint: {ratio:.2f}× → " + ("met" if ratio >= DESIGN_RATIO else "not met"),
    ]
    return "\n".join(out)


# --- main ----------------------------------------------------------------------------------------

def run_for_workers(workers: int, fleet: Fleet, args, covered: set) -> tuple[list[PhaseResult], list[str]]:
    port = free_port()
    problems: list[str] = []
    server = Server(workers=workers, port=port)
    try:
        reqs = {"ours": build_requests(fleet, path=OURS, port=port), "naive": build_requests(fleet, path=NAIVE, port=port)}
        problems += parity_check(port, fleet)
        if args.warmup > 0:
            for label in ("ours", "naive"):
                w = argparse.Namespace(**{**vars(args), "duration": args.warmup})
                r = run_phase(server, reqs[label], label=label, mode="max", args=w)
                if r.errors:
                    problems.append(f"warm-up {label}: {r.errors} errors, first: {r.first_error}")
        collected: dict[tuple[str, str], list[PhaseResult]] = {}
        for round_ in range(args.rounds):
            for mode in ("max", "rate"):
                order = ("ours", "naive") if round_ % 2 == 0 else ("naive", "ours")
                for label in order:
                    if label not in args.only:
                        continue
                    time.sleep(args.pause)
                    r = run_phase(server, reqs[label], label=label, mode=mode, args=args)
                    expected = len(r.ok_agents)
                    if r.advanced < expected:
                        problems.append(f"{label} {mode}: only {r.advanced} of {expected} agents' last_heartbeat_at advanced")
                    if r.errors:
                        problems.append(f"{label} {mode}: {r.errors} errors, first: {r.first_error}")
                    health = server.health()
                    if health:
                        problems.append(f"{label} {mode}: {health}")
                    print(f"  [{workers} worker(s)] {label:5} {mode:4}: {r.rate:8,.0f}/s  p50 {r.pct(.5):7.1f} ms  "
                          f"p99 {r.pct(.99):8.1f} ms  errors {r.errors}  agents advanced {r.advanced}/{len(fleet.ids)}",
                          flush=True)
                    collected.setdefault((label, mode), []).append(r)
                    covered.update(r.ok_agents)
        rows = [merge(collected[(label, mode)]) for mode in ("max", "rate") for label in ("ours", "naive")
                if (label, mode) in collected]
    finally:
        server.stop()
        if problems:
            summary = server.error_summary()
            if summary:
                problems.append(f"server log {server.log_path}: " + "; ".join(summary))
    return rows, problems


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--agents", type=int, default=1000)
    p.add_argument("--duration", type=float, default=10.0, help="seconds per measured phase")
    p.add_argument("--concurrency", type=int, default=64, help="connections")
    p.add_argument("--workers", default="2", help="uvicorn workers; a comma list runs each (e.g. 1,2,3)")
    p.add_argument("--rate", type=float, default=1000.0, help="offered heartbeats/s in the fixed-rate mode")
    p.add_argument("--warmup", type=float, default=3.0, help="seconds of unrecorded load per endpoint first")
    p.add_argument("--rounds", type=int, default=1, help="repeat the alternating phases (pooled)")
    p.add_argument("--pause", type=float, default=1.0, help="seconds of quiet between phases")
    p.add_argument("--only", default="ours,naive", help="endpoints to run: ours, naive or both")
    p.add_argument("--json", type=Path, help="also write the figures here")
    args = p.parse_args(argv)
    args.only = {s.strip() for s in args.only.split(",")}
    workers_list = [int(w) for w in str(args.workers).split(",")]

    django_setup()
    from django.conf import settings

    db = settings.DATABASES["default"]
    print(f"bench/heartbeat  {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC  on {machine()}; "
          f"database {db['NAME']}; load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"  agents {args.agents}, {args.duration:g} s per phase, {args.concurrency} connections, fixed rate "
          f"{args.rate:g}/s, workers {args.workers}; server {APP}; DB pool "
          f"{db.get('OPTIONS', {}).get('pool') or 'off'}")
    t0 = time.monotonic()
    fleet = fleet_create(args.agents)
    print(f"  registered {args.agents} agents in {time.monotonic() - t0:.1f} s", flush=True)
    run_started = db_now()

    all_rows: dict[int, list[PhaseResult]] = {}
    covered: set[int] = set()  # agents that got a 200 in some measured phase
    problems: list[str] = []
    for workers in workers_list:
        rows, probs = run_for_workers(workers, fleet, args, covered)
        all_rows[workers] = rows
        problems += [f"[{workers} worker(s)] {x}" for x in probs]

    advanced = fleet_advanced_since(run_started)
    if advanced < len(covered):
        problems.append(f"{len(covered)} agents got a 200 but only {advanced} have a newer last_heartbeat_at")
    statuses = fleet_status_counts()
    transitions = status_events_since(run_started)

    print()
    for workers, rows in all_rows.items():
        print(f"### {workers} uvicorn worker(s)\n")
        print(table(rows, args))
        print("\n(server CPU: the uvicorn processes; PG CPU: backends of this database; client: this process,"
              " % of one core)")
        by = {(r.label, r.mode): r for r in rows}
        if all(k in by for k in (("ours", "max"), ("naive", "max"), ("ours", "rate"), ("naive", "rate"))):
            print()
            print(verdict(by[("ours", "max")], by[("naive", "max")], by[("ours", "rate")], by[("naive", "rate")], args))
        print()
    if len(all_rows) > 1:
        best = max(all_rows, key=lambda w: next((r.rate for r in all_rows[w] if r.label == "ours" and r.mode == "max"), 0))
        print(f"best worker count for our endpoint (max throughput): {best}")
    print(f"fleet after the run: {statuses}; status-change events during the run: {transitions} (a steady fleet: 0)")
    print(f"load average at the end (the bench's own processes included): "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if args.json:
        args.json.write_text(json.dumps({
            str(w): [{"path": r.label, "mode": r.mode, "rate": r.rate, "p50_ms": r.pct(.5), "p99_ms": r.pct(.99),
                      "errors": r.errors, "ok": r.ok, "server_cpu_ms": 1000 * r.cpu_server / max(r.ok, 1),
                      "pg_cpu_ms": 1000 * r.cpu_db / max(r.ok, 1), "client_cpu_pct": 100 * r.cpu_client / r.wall,
                      "new_sessions_per_req": r.new_sessions / max(r.ok, 1)} for r in rows]
            for w, rows in all_rows.items()}, indent=2))
    if problems:
        print("\nCORRECTNESS PROBLEMS:")
        for x in problems:
            print(f"  - {x}")
        return 1
    print(f"correctness: 0 errors; in every phase each agent that got a 200 has a newer last_heartbeat_at "
          f"({len(covered)} of {args.agents} agents were driven, {advanced} advanced)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
