"""Browser tests: a real uvicorn serving the ASGI app, a real Chromium driving it.

The server runs in its own process against the *test* database, so every test that
uses it must commit its data (`transactional_db`, which the `live_url` fixture pulls
in). Live updates travel the production path: a service in this process publishes to
Redis on commit, the server's consumer renders and pushes, htmx swaps in place.

Chromium is Debian's (`apt-get install chromium`), or the binary named by
PULSEGUARD_CHROMIUM; `playwright install` is never needed.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.e2e.support import ARTIFACTS, AgentClient
from tests.live import server_env

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("PULSEGUARD_CHROMIUM", "/usr/bin/chromium")
VIEWPORT = {"width": 1440, "height": 900}
TIMEOUT_MS = 5_000


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    # Let fixtures know how the test went (a failure screenshot gets its own name).
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


# --- the live server ---------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def live_server_process(django_db_setup, django_db_blocker):
    """uvicorn serving pulseguard.asgi on a free port, pointed at the test database."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = server_env(PULSEGUARD_LIVE_COALESCE_MS=100, PULSEGUARD_LOG_LEVEL="WARNING")
    env.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)  # the server keeps Django's safety check
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    log_path = ARTIFACTS / "server.log"
    log = open(log_path, "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "pulseguard.asgi:application", "--host", "127.0.0.1", "--port", str(port),
         "--lifespan", "off", "--no-access-log", "--timeout-graceful-shutdown", "2"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"uvicorn exited with {proc.returncode}; see {log_path}:\n{log_path.read_text()[-3000:]}")
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"uvicorn did not answer {url}/healthz within 30 s; see {log_path}")
            time.sleep(0.1)
        yield url
    finally:
        # Stop it before pytest-django drops the test database it is connected to.
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)
        log.close()


@pytest.fixture
def live_url(live_server_process, transactional_db, settings):
    """The server's base URL; the test's writes are committed, so the server sees them.

    The telemetry tables are emptied before and after (the flush that ends the test does
    not reach them), so no test sees another's samples."""
    from tests.e2e.support import metrics_tables_truncate

    settings.PASSWORD_HASHERS = ["tests.e2e.support.FastPBKDF2PasswordHasher"]
    metrics_tables_truncate()
    yield live_server_process
    metrics_tables_truncate()


# --- the browser -------------------------------------------------------------------------


@pytest.fixture(scope="session")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.skip(f"browser tests need Chromium at {CHROMIUM} (apt-get install chromium, or set PULSEGUARD_CHROMIUM)")
    from playwright.sync_api import sync_playwright

    # Playwright's sync API keeps an event loop running in this thread, and Django then
    # refuses ORM calls ("use a thread or sync_to_async"). Nothing runs concurrently on
    # that loop between Playwright calls, so the check is lifted while the browser lives.
    # Code that publishes live events (async_to_sync) still needs `in_thread`.
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_playwright() as p:
            chromium = p.chromium.launch(
                executable_path=CHROMIUM,
                headless=True,
                args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
            )
            yield chromium
            chromium.close()
    finally:
        if previous is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


def _artifact_name(node) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", node.name)[:120]


@pytest.fixture
def new_page(browser, live_url, request):
    """Factory for pages in fresh browser contexts (one per user); screenshots each at the end."""
    from playwright.sync_api import expect

    expect.set_options(timeout=TIMEOUT_MS)
    contexts = []

    def make(viewport=VIEWPORT):
        context = browser.new_context(base_url=live_url, viewport=viewport)
        context.set_default_timeout(TIMEOUT_MS)
        page = context.new_page()
        contexts.append((context, page))
        return page

    yield make

    failed = getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed
    if failed:  # what the server said helps more than the page does, often
        log = ARTIFACTS / "server.log"
        if log.exists():
            print(f"--- last lines of {log} ---\n" + "\n".join(log.read_text(errors="replace").splitlines()[-40:]))
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for i, (context, page) in enumerate(contexts):
        suffix = "" if len(contexts) == 1 else f"-{i + 1}"
        name = f"{_artifact_name(request.node)}{suffix}{'-FAILED' if failed else ''}.png"
        try:
            page.screenshot(path=str(ARTIFACTS / name), full_page=True)
        except Exception:  # a crashed page must not hide the test's own failure
            pass
        context.close()


@pytest.fixture
def page(new_page):
    return new_page()


@pytest.fixture
def agent_client(live_url):
    from apps.agents import services

    _, raw = services.enrollment_key_create(name="e2e-key")
    clients = []

    def make() -> AgentClient:
        c = AgentClient(live_url, raw)
        clients.append(c)
        return c

    yield make
    for c in clients:
        c.close()
