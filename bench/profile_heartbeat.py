#!/usr/bin/env python
"""Where a heartbeat's server CPU goes: py-spy on one uvicorn worker under max load.

    python bench/profile_heartbeat.py [--path ours|naive] [--duration 15] [--pyspy /tmp/pyspy-venv/bin/py-spy]

Same setup as bench/heartbeat.py (migrate, fleet, the product's server
``pulseguard.asgi:application`` with bench.settings), one worker, ``--concurrency``
connections closed-loop (or ``--rate`` open-loop), while py-spy samples the worker (only threads holding the GIL, i.e. running
Python, so waiting on PostgreSQL does not count). Prints the share of samples per
layer, inclusive (a sample counts for every layer on its stack) and exclusive (the
innermost layer we recognise), and writes the collapsed stacks for a flame graph.
py-spy is not a dependency: install it anywhere (``pip install py-spy``) and point
--pyspy at it or put it on PATH.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import heartbeat as hb  # noqa: E402  (sets the environment before Django loads)

# Layers, innermost first: a frame is attributed to the first rule whose pattern it contains.
# Frames look like "function (path/to/file.py:line)" in py-spy's collapsed output.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("db: pool checkout health check (empty query, CONN_HEALTH_CHECKS)", ("check_connection",)),
    ("db: checkout/return (Django connect()/close(), psycopg_pool)",
     ("psycopg_pool/", "get_new_connection", "init_connection_state", "get_connection_params",
      "BaseDatabaseWrapper.connect ", "BaseDatabaseWrapper.close ", "_close ", "DatabaseWrapper.close ")),
    ("db: execute (psycopg, Django cursor wrappers, prometheus db metrics)",
     ("psycopg/", "django/db/backends/", "django_prometheus/db/")),
    ("ORM: query building/compiling, model save", ("django/db/models/",)),
    ("transaction.atomic / on_commit", ("django/db/transaction.py",)),
    ("service: agent_heartbeats_record (own code)", ("apps/agents/services.py",)),
    ("naive view (own code)", ("bench/naive.py",)),
    ("DRF: serializers/fields (validation, to_representation)", ("rest_framework/serializers.py", "rest_framework/fields.py",
                                                               "apps/agents/api/serializers.py")),
    ("DRF: request parsing (JSONParser, request.data)", ("rest_framework/parsers.py", "rest_framework/request.py")),
    ("DRF: response rendering (JSONRenderer, Response)", ("rest_framework/renderers.py", "rest_framework/response.py",
                                                         "django/template/response.py")),
    ("DRF: APIView dispatch/initial/finalize (negotiation, throttles, headers)", ("rest_framework/",)),
    ("view adapter: AgentHeartbeatApi (own code)", ("apps/agents/api/views.py",)),
    ("fast path: compiled validation (apps/core/fastvalidate.py)", ("apps/core/fastvalidate.py",)),
    ("fast path: group commit (apps/core/batching.py)", ("apps/core/batching.py",)),
    ("fast path: HeartbeatEndpoint (apps/agents/api/fast.py)", ("apps/agents/api/fast.py",)),
    ("prometheus: django-prometheus middleware, prometheus_client metrics", ("django_prometheus/middleware",
                                                                          "prometheus_client/")),
    ("middleware: RequestId/Probe/BodySize + structlog contextvars", ("apps/core/middleware.py", "structlog/")),
    ("middleware: Django's (security, session, common, csrf, auth, messages, clickjacking)",
     ("django/middleware/", "django/contrib/sessions/middleware", "django/contrib/auth/middleware",
      "django/contrib/messages/middleware", "django/utils/deprecation.py")),
    ("middleware: whitenoise, htmx", ("whitenoise/", "django_htmx/")),
    ("signals: request_started/finished (close_old_connections)", ("django/dispatch/", "close_old_connections",
                                                                    "django/db/__init__.py")),
    ("Django: URL resolving", ("django/urls/",)),
    ("Django: HttpRequest/HttpResponse objects, headers", ("django/http/", "django/utils/datastructures.py")),
    ("Django ASGI handler (request build, body, send_response)", ("django/core/handlers/asgi.py",)),
    ("Django handler chain (base/exception)", ("django/core/handlers/",)),
    ("threads: asgiref sync_to_async/async_to_sync, executor queues (group-commit threads too)",
     ("asgiref/", "concurrent/futures/", "threading.py")),
    ("channels ProtocolTypeRouter", ("channels/",)),
    ("uvicorn + httptools (HTTP parse, ASGI send/receive)", ("uvicorn/", "httptools/")),
    ("asyncio / uvloop event loop", ("asyncio/", "uvloop/")),
    ("json (stdlib)", ("json/",)),
]


def classify(frame: str) -> str | None:
    for name, patterns in LAYERS:
        if any(p in frame for p in patterns):
            return name
    return None


def analyse(collapsed: Path) -> str:
    inclusive: dict[str, int] = {}
    exclusive: dict[str, int] = {}
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        total += n
        frames = stack.split(";")
        seen = set()
        innermost = None
        for frame in frames:
            layer = classify(frame)
            if layer:
                seen.add(layer)
        for frame in reversed(frames):
            layer = classify(frame)
            if layer:
                innermost = layer
                break
        for layer in seen:
            inclusive[layer] = inclusive.get(layer, 0) + n
        key = innermost or "other (" + (frames[-1].split(" (")[0] if frames else "?") + ")"
        exclusive[key] = exclusive.get(key, 0) + n
    out = [f"{total} samples (GIL held)", "", "| layer | exclusive % | inclusive % |", "| --- | --- | --- |"]
    names = [name for name, _ in LAYERS] + sorted(k for k in exclusive if k.startswith("other"))
    rows = sorted(names, key=lambda k: -exclusive.get(k, 0))
    other_small = 0
    for name in rows:
        ex, inc = exclusive.get(name, 0), inclusive.get(name, 0)
        if name.startswith("other") and ex / max(total, 1) < 0.01:
            other_small += ex
            continue
        if ex == 0 and inc == 0:
            continue
        out.append(f"| {name} | {100 * ex / total:.1f} | {100 * inc / total:.1f} |")
    if other_small:
        out.append(f"| other (each < 1 %) | {100 * other_small / total:.1f} | |")
    return "\n".join(out)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--path", choices=("ours", "naive"), default="ours")
    p.add_argument("--agents", type=int, default=1000)
    p.add_argument("--duration", type=float, default=15.0)
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--rate", type=float, default=0, help="profile at a fixed rate instead of max")
    p.add_argument("--pyspy", default=shutil.which("py-spy") or "/tmp/pyspy-venv/bin/py-spy")
    p.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "pulseguard-heartbeat-profile.txt")
    p.add_argument("--idle", action="store_true", help="also count samples not holding the GIL")
    args = p.parse_args()
    if not Path(args.pyspy).exists():
        raise SystemExit(f"py-spy not found at {args.pyspy}: pip install py-spy and pass --pyspy")

    hb.django_setup()
    fleet = hb.fleet_create(args.agents)
    server = hb.Server(workers=1, port=hb.free_port())
    try:
        path = hb.OURS if args.path == "ours" else hb.NAIVE
        reqs = hb.build_requests(fleet, path=path, port=server.port)
        warm = argparse.Namespace(duration=3.0, concurrency=args.concurrency, rate=args.rate or 1000)
        hb.run_phase(server, reqs, label=args.path, mode="max", args=warm)
        worker = server.worker_pids()[-1] if server.worker_pids() else server.proc.pid
        cmd = [args.pyspy, "record", "--pid", str(worker), "--format", "raw", "--rate", "250",
               "--duration", str(int(args.duration)), "--output", str(args.out), "--nonblocking"]
        if not args.idle:
            cmd.append("--gil")
        spy = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(1.0)
        load = argparse.Namespace(duration=args.duration - 1.5, concurrency=args.concurrency, rate=args.rate or 1000)
        r = hb.run_phase(server, reqs, label=args.path, mode="rate" if args.rate else "max", args=load)
        spy.wait(timeout=args.duration + 30)
    finally:
        server.stop()
    n = max(r.ok + r.errors, 1)
    print(f"{args.path}: {r.rate:,.0f}/s, p50 {r.pct(.5):.1f} ms, p99 {r.pct(.99):.1f} ms, errors {r.errors}, "
          f"server CPU {1000 * r.cpu_server / n:.2f} ms/req, PG CPU {1000 * r.cpu_db / n:.2f} ms/req, "
          f"new DB sessions/req {r.new_sessions / n:.2f}")
    if not args.out.exists():
        print(spy.stderr.read().decode() if spy.stderr else "py-spy wrote nothing")
        return 1
    print(analyse(args.out))
    print(f"\ncollapsed stacks: {args.out} (flamegraph.pl or speedscope.app read them)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
