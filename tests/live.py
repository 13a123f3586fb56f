"""For tests that start real server processes (uvicorn, a Celery worker) on the test database."""

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from urllib.parse import quote

from django.conf import settings
from django.db import connection


def database_url(settings_dict: dict | None = None) -> str:
    """A DATABASE_URL for the test database that django-environ reads back identically.

    The embedded PostgreSQL listens on a unix socket: django-environ takes a host that
    starts with '/' as the socket directory, so that path must not be percent-encoded.
    """
    s = settings_dict or connection.settings_dict
    user = quote(s.get("USER") or "", safe="")
    password = quote(str(s.get("PASSWORD") or ""), safe="")
    auth = f"{user}:{password}@" if password else (f"{user}@" if user else "")
    host = s.get("HOST") or ""
    if host.startswith("/"):
        return f"postgres://{auth}/{host}/{quote(s['NAME'], safe='')}"
    port = f":{s['PORT']}" if s.get("PORT") else ""
    return f"postgres://{auth}{host}{port}/{quote(s['NAME'], safe='')}"


def server_env(**overrides) -> dict[str, str]:
    """The environment of a child process that shares this test run's PostgreSQL and Redis."""
    env = dict(os.environ)
    env.update(
        DATABASE_URL=database_url(),
        REDIS_URL=settings.REDIS_URL,
        DJANGO_SETTINGS_MODULE="pulseguard.settings",
        DJANGO_DEBUG="true",
        DJANGO_SECRET_KEY=os.environ.get("DJANGO_SECRET_KEY") or "test-only-secret-key",
        PYTHONUNBUFFERED="1",
        PATH=f"{os.path.dirname(sys.executable)}{os.pathsep}{os.environ.get('PATH', '')}",
    )
    env.update({k: str(v) for k, v in overrides.items()})
    return env


ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def uvicorn_server(log_path: Path, **env_overrides):
    """uvicorn serving pulseguard.asgi on a free port, on the test database; yields its URL.

    It is stopped before pytest-django drops the database it is connected to.
    """
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = server_env(PULSEGUARD_LOG_LEVEL="WARNING", **env_overrides)
    env.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "pulseguard.asgi:application", "--host", "127.0.0.1", "--port", str(port),
             "--lifespan", "off", "--no-access-log", "--timeout-graceful-shutdown", "2"],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"uvicorn exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{url}/healthz", timeout=1) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"uvicorn did not answer within 30 s:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.1)
        yield url
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)
