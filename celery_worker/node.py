"""A Celery worker registers as an agent of kind "worker" and heartbeats like one.

It talks to the services in-process (no HTTP, no enrollment key: it is part of this
deployment), from one daemon thread in the worker's main process, so a busy pool never
delays its heartbeat. Commands map onto Celery's remote control, which the worker's own
event loop executes:

    drain, isolate  stop consuming every queue (running tasks finish)
    release         consume them again
    restart         restart the pool processes (worker_pool_restarts is on)
"""

from __future__ import annotations

import threading

import structlog
from django.conf import settings
from django.db import close_old_connections, connection

from apps.agents import services
from apps.core.errors import ApplicationError
from pulseguard_agent import __version__ as sdk_version
from pulseguard_agent.host import host_inventory, host_readings

log = structlog.get_logger(__name__)


class WorkerNode:
    def __init__(self, *, app, hostname: str, queues: list[str]) -> None:
        self.app = app
        self.hostname = hostname
        self.queues = queues
        self.agent_id = None
        self.token = ""
        self.state = "idle"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        try:
            agent, self.token = services.agent_register_worker(
                name=self.hostname, host=host_inventory(), capabilities=[f"queue:{q}" for q in self.queues],
                version=f"celery-worker/{sdk_version}",
            )
        finally:
            connection.close()
        self.agent_id = agent.pk
        log.info("worker_node_registered", agent_id=str(agent.pk), node=self.hostname, queues=self.queues)
        self._thread = threading.Thread(target=self._run, name="pulseguard-node", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self.agent_id is None:
            return
        try:
            agent = services.agent_authenticate(raw_token=self.token)
            services.agent_goodbye(agent=agent)
        except ApplicationError:
            pass  # replaced by a newer worker with our name: nothing to say goodbye for
        finally:
            connection.close()

    # --- heartbeat loop ----------------------------------------------------------------

    def _run(self) -> None:
        interval = settings.PULSEGUARD_HEARTBEAT_INTERVAL
        while not self._stop.is_set():
            try:
                self.beat()
            except Exception:
                log.exception("worker_node_heartbeat_failed", node=self.hostname)
            self._stop.wait(interval)

    def beat(self) -> list[dict]:
        """One heartbeat; carries out whatever commands came back."""
        close_old_connections()
        try:
            result = services.agent_heartbeat_record(
                agent_id=self.agent_id, token=self.token, state=self.state, readings=host_readings()
            )
            for command in result.commands:
                self._obey(command)
            return result.commands
        finally:
            connection.close()

    def _obey(self, command: dict) -> None:
        kind = command["type"]
        ok, message = True, ""
        destination = [self.hostname]
        if kind in ("drain", "isolate"):
            for queue in self.queues:
                self.app.control.cancel_consumer(queue, destination=destination)
            self.state = "draining"
            message = f"stopped consuming {', '.join(self.queues)}"
        elif kind == "release":
            for queue in self.queues:
                self.app.control.add_consumer(queue, destination=destination)
            self.state = "idle"
            message = f"consuming {', '.join(self.queues)} again"
        elif kind == "restart":
            self.app.control.pool_restart(destination=destination)
            message = "pool restarted"
        else:
            ok, message = False, f"a Celery worker has no use for {kind!r}"
        agent = services.agent_authenticate(raw_token=self.token)
        services.agent_command_ack(agent=agent, command_id=command["id"], ok=ok, message=message)
        log.info("worker_node_command", node=self.hostname, command=kind, ok=ok, detail=message)
