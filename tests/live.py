"""For tests that start real server processes (uvicorn, a Celery worker) on the test database."""

import os
import sys
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
