"""The agent's heartbeat loop: report, receive commands, carry them out, acknowledge.

Commands arrive in heartbeat responses (agents never need an inbound port) and are
delivered once, so every command is acknowledged, and an acknowledgement that could not
be sent is kept and sent again with the next heartbeat. Telemetry (host, GPU and LLM
samples) runs beside the loop on its own schedule (telemetry.py), and so does the task
worker when the runner is given task handlers (worker.py).
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from pulseguard_agent.backoff import Backoff
from pulseguard_agent.buffer import TelemetryBuffer, default_buffer
from pulseguard_agent.client import Client
from pulseguard_agent.config import AgentConfig, TelemetryConfig
from pulseguard_agent.errors import AgentRejected, PulseGuardError, ServerUnavailable, TaskError
from pulseguard_agent.host import finite_readings, host_readings
from pulseguard_agent.telemetry import Telemetry
from pulseguard_agent.worker import DEFAULT_WAIT_S, ClaimedTask, TaskWorker

log = logging.getLogger(__name__)

STATES = ("idle", "busy", "draining")
DEFAULT_INTERVAL_S = 30.0
Handler = Callable[[dict], "str | None"]
TaskHandler = Callable[[dict], "dict | None"]  # payload -> result
KindTaskHandler = Callable[[str, dict], "dict | None"]  # (kind, payload) -> result
DEFAULT_TASK_GRACE_S = 25.0  # inside Kubernetes' default 30 s between SIGTERM and SIGKILL

_REJECTED_HINT = {
    "invalid_token": "Another process re-registered this agent's name (replace=true), or the token was revoked; "
    "this process stops so the two do not fight. Register again to take the name back.",
    "token_agent_mismatch": "The token belongs to a different agent id; check the stored id and token.",
    "unknown_agent": "The agent was deleted on the server; register again to come back.",
}


class AgentRunner:
    """Heartbeats every `heartbeat_interval_s` (the server's value unless `interval_s` is
    given), sends `readings()` with each beat when telemetry is off (with telemetry on,
    readings travel in the telemetry batches instead), and runs commands through handlers.

    Default handlers: drain -> state "draining"; isolate / release -> `isolated` flag;
    config -> args merged into `remote_config`; restart -> acknowledged, then
    `on_restart(command)` is called (without one, the request is only logged). A handler
    returns an optional message; raising marks the command failed with the error text.
    While the server is unreachable the loop backs off (exponential, jittered). `stop()`
    or SIGTERM/SIGINT (after `install_signal_handlers()`) ends it with a goodbye.

    `telemetry=True` (the default) makes `run()` send host and GPU samples, and the LLM
    calls recorded with `record_llm_call()`, as `config.telemetry` says (else
    PULSEGUARD_* variables); pass a `Telemetry` to choose yourself, or False for none.

    With `task_handlers` ({kind: fn(payload) -> dict}) or `task_handler` (fn(kind,
    payload) -> dict), `run()` also works the task queue (worker.py): it claims up to
    `task_concurrency` tasks at a time with a long poll of `task_wait_s`, but never while
    draining or isolated; state is busy while a task runs, idle otherwise. On stop it
    claims nothing more and keeps heartbeating (as draining) while running tasks finish,
    for up to `task_grace_s`, before the goodbye.
    """

    def __init__(
        self,
        client: Client,
        *,
        config: AgentConfig | None = None,
        state: str = "idle",
        readings: Callable[[], dict | None] | None = host_readings,
        handlers: dict[str, Handler] | None = None,
        on_restart: Callable[[dict], None] | None = None,
        interval_s: float | None = None,
        backoff: Backoff | None = None,
        telemetry: Telemetry | bool = True,
        task_handlers: dict[str, TaskHandler] | None = None,
        task_handler: KindTaskHandler | None = None,
        task_concurrency: int = 1,
        task_wait_s: float = DEFAULT_WAIT_S,
        task_grace_s: float = DEFAULT_TASK_GRACE_S,
    ):
        self.client = client
        self.config = config
        self._state_lock = threading.Lock()
        self.state = state
        self.isolated = False
        self.remote_config: dict[str, Any] = {}
        self.last_response: dict | None = None
        self.error: AgentRejected | None = None
        self.interval_override = interval_s
        self._readings = readings
        self._on_restart = on_restart
        self._backoff = backoff or Backoff(base=1.0, cap=60.0)
        self._handlers: dict[str, Handler] = {
            "drain": self._drain,
            "isolate": self._isolate,
            "release": self._release,
            "restart": self._restart,
            "config": self._config,
        }
        self._handlers.update(handlers or {})
        self._pending_acks: deque[tuple[str, bool, str]] = deque(maxlen=1000)
        self._stop = threading.Event()
        self._reachable = True
        self._restart_command: dict | None = None
        self.telemetry: Telemetry | None = telemetry if isinstance(telemetry, Telemetry) else None
        self._build_telemetry = telemetry is True
        self._telemetry_started = False
        self._error_lock = threading.Lock()
        self._task_handlers: dict[str, TaskHandler] = dict(task_handlers or {})
        self._task_handler = task_handler
        self.task_concurrency = task_concurrency
        self.task_wait_s = task_wait_s
        self.task_grace_s = task_grace_s
        self.worker: TaskWorker | None = None
        self._report_soon = False

    # --- state -----------------------------------------------------------------------

    @property
    def state(self) -> str:
        """What the agent says it is doing: idle, busy or draining."""
        return self._state

    @state.setter
    def state(self, value: str) -> None:
        if value not in STATES:
            raise ValueError(f"state must be one of {', '.join(STATES)} (got {value!r})")
        with self._state_lock:
            self._state = value

    def set_task_load(self, running: int) -> None:
        """Busy while `running` > 0, idle otherwise; a draining agent stays draining."""
        with self._state_lock:
            if self._state != "draining":
                self._state = "busy" if running > 0 else "idle"

    @property
    def may_take_work(self) -> bool:
        """Whether new tasks may be claimed: not stopping, draining or isolated."""
        return not self._stop.is_set() and self._state != "draining" and not self.isolated

    @property
    def restart_requested(self) -> bool:
        """Whether a restart command arrived and its hook has not run yet."""
        return self._restart_command is not None

    @property
    def heartbeat_interval_s(self) -> float:
        """Seconds between heartbeats: the override, else the server's, else a default."""
        if self.interval_override is not None:
            return self.interval_override
        return float(self.client.heartbeat_interval_s or DEFAULT_INTERVAL_S)

    def register_handler(self, command_type: str, handler: Handler) -> None:
        """Run `handler(command)` for commands of this type (replaces the default)."""
        self._handlers[command_type] = handler

    def register_task_handler(self, kind: str, handler: TaskHandler) -> None:
        """Run `handler(payload) -> dict` for tasks of this kind (before `run()`)."""
        self._task_handlers[kind] = handler

    @property
    def buffer(self) -> TelemetryBuffer:
        """Where this agent's samples wait to be sent (the process-wide buffer unless a Telemetry says otherwise)."""
        return self.telemetry.buffer if self.telemetry is not None else default_buffer()

    def record_llm_call(self, provider: str, model: str, *args: Any, **fields: Any) -> dict:
        """Record one LLM call; sent with the next telemetry batch. Arguments as `pulseguard_agent.record_llm_call`."""
        return self.buffer.record_llm_call(provider, model, *args, **fields)

    def record_metric(self, name: str, value: float, **fields: Any) -> dict:
        """Record one custom gauge (or counter: type="counter") reading, sent with the telemetry."""
        return self.buffer.record_metric(name, value, **fields)

    # --- the loop --------------------------------------------------------------------

    def run(self) -> None:
        """Register if needed, then heartbeat until stopped; says goodbye on the way out.

        Raises AgentRejected if the server stops accepting this agent's token, and
        PulseGuardError if registration is refused (both after logging why).
        """
        if not self.client.registered and not self._register():
            return
        self._start_telemetry()
        self._start_worker()
        failures = 0
        try:
            while not self._stop.is_set():
                try:
                    self.run_once()
                    if failures:
                        log.info("Server reachable again after %d failed heartbeat(s)", failures)
                    failures, delay = 0, self.heartbeat_interval_s
                    if self._report_soon:  # say "draining" now, so the server stops handing out work
                        self._report_soon, delay = False, 0.0
                except ServerUnavailable as exc:
                    failures += 1
                    delay = self._backoff.delay(failures)
                    log.warning("Heartbeat failed (%s); next try in %.1fs", exc, delay)
                except PulseGuardError as exc:
                    if exc.status in (401, 403, 404):
                        error = self._rejected(exc)
                        log.error("Stopping: the server rejected this agent: %s", error)
                        raise error from exc
                    # Our payload was refused (400): keep beating, the next one may be fine.
                    log.error("Heartbeat refused: %s", exc)
                    delay = self.heartbeat_interval_s
                self._stop.wait(delay)
        finally:
            if self.worker is not None:
                self._finish_tasks()
            if self._telemetry_started:
                self._telemetry_started = False
                self.telemetry.stop(send=self.error is None)  # type: ignore[union-attr]
            if self.error is None:
                self._say_goodbye()
        if self.error is not None:  # rejected while sending telemetry
            raise self.error

    def run_once(self, *, task_ids: list[int] | None = None) -> dict:
        """One heartbeat with readings; carries out and acknowledges the commands it returns.

        The heartbeat names the tasks held (the worker's, or `task_ids`), which renews
        their leases; the answer's `tasks` says which were lost.
        """
        held = task_ids if task_ids is not None else (self.worker.held_ids() if self.worker is not None else None)
        sent_at = time.monotonic()
        try:
            response = self.client.heartbeat(self.state, self._collect_readings(), task_ids=held, attempts=1)
        except ServerUnavailable:
            self._reachable = False
            raise
        self._reachable = True
        self.last_response = response
        leases = response.get("tasks")
        if leases and self.worker is not None and task_ids is None:
            self.worker.leases_renewed(leases.get("renewed") or [], leases.get("lost") or [], at=sent_at)
        self._flush_acks()
        log.debug("Heartbeat: status %s, %d command(s), %.1f ms", response.get("status"),
                  len(response.get("commands") or []), self.client.last_latency_ms or 0.0)
        for command in response.get("commands") or []:
            ok, message = self._dispatch(command)
            self._ack(str(command.get("id")), ok, message)
        # Restart only after every acknowledgement is out: the hook may end this process.
        restart, self._restart_command = self._restart_command, None
        if restart is not None and self._on_restart is not None:
            self._on_restart(restart)
        return response

    def stop(self) -> None:
        """Ask the loop to end; it sends goodbye before `run()` returns. Safe from any thread."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        """Whether stop() has been called."""
        return self._stop.is_set()

    def install_signal_handlers(self) -> None:
        """SIGTERM / SIGINT stop the loop cleanly; a second one aborts at once (main thread only)."""

        def handle(signum: int, frame: object) -> None:
            if self._stop.is_set():
                signal.signal(signum, signal.SIG_DFL)
                raise KeyboardInterrupt
            log.info("Received %s: saying goodbye", signal.Signals(signum).name)
            self.stop()

        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, handle)

    # --- internals -------------------------------------------------------------------

    def _register(self) -> bool:
        if self.config is None:
            raise RuntimeError("The client is not registered and no AgentConfig was given to register with")
        failures = 0
        while not self._stop.is_set():
            try:
                response = self.config.register(self.client)
            except ServerUnavailable as exc:
                failures += 1
                delay = self._backoff.delay(failures)
                log.warning("Registration failed (%s); next try in %.1fs", exc, delay)
                self._stop.wait(delay)
                continue
            except PulseGuardError as exc:
                log.error("Registration refused: %s", exc)
                raise
            log.info("Registered %s as %s (heartbeat every %gs)", self.config.name, response["id"],
                     self.heartbeat_interval_s)
            return True
        return False

    def _start_worker(self) -> None:
        if self.worker is not None or not (self._task_handlers or self._task_handler):
            return
        self.worker = TaskWorker(
            self.client, self._run_task, concurrency=self.task_concurrency, wait_s=self.task_wait_s,
            can_claim=lambda: self.may_take_work, on_load=self.set_task_load, on_rejected=self._rejected_in_background,
        )
        self.worker.start()
        kinds = ", ".join(sorted(self._task_handlers)) or "any kind"
        log.info("Working the task queue (%s; up to %d at a time)", kinds, self.task_concurrency)

    def _run_task(self, task: ClaimedTask) -> dict | None:
        handler = self._task_handlers.get(task.kind)
        if handler is not None:
            return handler(task.payload)
        if self._task_handler is not None:
            return self._task_handler(task.kind, task.payload)
        # The server hands out tasks by capability, not kind: this agent declares one it
        # has no handler for. Another agent (or a later try) may have one.
        log.warning("No handler for task kind %r (task %s): check this agent's capabilities", task.kind, task.id)
        raise TaskError(f"this agent has no handler for tasks of kind {task.kind!r}", "agent_error")

    def _finish_tasks(self) -> None:
        """Claim nothing more; while tasks run (up to the grace period) keep heartbeating, as draining."""
        worker = self.worker
        assert worker is not None
        worker.stop_claiming()
        if self.error is None and worker.active:
            log.info("Stopping: waiting up to %.0fs for %d running task(s)", self.task_grace_s, worker.active)
            self.state = "draining"
            deadline = time.monotonic() + self.task_grace_s
            while True:
                left = deadline - time.monotonic()
                if left <= 0 or worker.wait_idle(min(left, self.heartbeat_interval_s)):
                    break
                try:
                    self.run_once()
                except PulseGuardError as exc:
                    log.warning("Heartbeat while finishing tasks failed: %s", exc)
        worker.stop(timeout=0)

    def _start_telemetry(self) -> None:
        if self.telemetry is None and self._build_telemetry:
            settings = self.config.telemetry if self.config is not None else TelemetryConfig.from_env()
            if settings.enabled:
                agent = self.config.name if self.config is not None else str(self.client.agent_id)
                self.telemetry = Telemetry.from_config(self.client, settings, agent=agent)
        if self.telemetry is not None and not self.telemetry.running:
            self.telemetry.start(on_rejected=self._rejected_in_background)
            self._telemetry_started = True

    def _rejected_in_background(self, exc: PulseGuardError) -> None:
        self._rejected(exc)
        self.stop()

    def _rejected(self, exc: PulseGuardError) -> AgentRejected:
        """Record why the server rejected this agent; the first reason stands (heartbeat and telemetry may race)."""
        with self._error_lock:
            if self.error is None:
                hint = _REJECTED_HINT.get(exc.code, "The server no longer accepts this agent.")
                self.error = AgentRejected(exc, hint)
            return self.error

    def _collect_readings(self) -> dict | None:
        # With telemetry on, host and GPU readings travel in the telemetry batches (which
        # also refresh the agent's row on the server); sending them in heartbeats too
        # would store every reading twice.
        if self._readings is None or self.telemetry is not None or self._build_telemetry:
            return None
        try:
            readings = self._readings()
        except Exception:  # a broken sensor must not stop the heartbeat
            log.exception("Collecting readings failed; heartbeat sent without them")
            return None
        return None if readings is None else finite_readings(readings)

    def _dispatch(self, command: dict) -> tuple[bool, str]:
        kind = command.get("type", "")
        handler = self._handlers.get(kind)
        if handler is None:
            log.warning("Command %s of unsupported type %r", command.get("id"), kind)
            return False, f"unsupported command type {kind!r}"
        try:
            message = handler(command)
        except Exception as exc:
            log.exception("Command %s (%s) failed", command.get("id"), kind)
            return False, f"{type(exc).__name__}: {exc}"
        log.info("Command %s (%s) done: %s", command.get("id"), kind, message or "ok")
        return True, message or ""

    def _ack(self, command_id: str, ok: bool, message: str) -> bool:
        """Send one ack; False if it could not be delivered and was queued for later."""
        try:
            self.client.ack(command_id, ok, message, attempts=2)
        except ServerUnavailable as exc:
            log.warning("Ack of %s failed (%s); will resend after the next heartbeat", command_id, exc)
            self._pending_acks.append((command_id, ok, message))
            return False
        except PulseGuardError as exc:
            # 409 already_acknowledged: an earlier resend got through. Anything else: nothing to retry.
            log.log(logging.DEBUG if exc.status == 409 else logging.WARNING, "Ack of %s refused: %s", command_id, exc)
        return True

    def _flush_acks(self) -> None:
        # Stop at the first failure: with the server down, each try would cost a timeout.
        for _ in range(len(self._pending_acks)):
            if not self._ack(*self._pending_acks.popleft()):
                return

    def _say_goodbye(self) -> None:
        if not self.client.registered:
            return
        if self._reachable:
            self._flush_acks()
        try:
            self.client.goodbye(attempts=2 if self._reachable else 1)
            log.info("Said goodbye")
        except PulseGuardError as exc:
            log.warning("Goodbye failed (%s); the server will mark this agent stale instead", exc)

    # --- default handlers --------------------------------------------------------------

    def _drain(self, command: dict) -> str:
        if self.state != "draining":
            self._report_soon = True
        self.state = "draining"
        if self.worker is not None and self.worker.active:
            return f"draining: taking no new work, finishing {self.worker.active} running task(s)"
        return "draining: taking no new work"

    def _isolate(self, command: dict) -> str:
        self.isolated = True
        return "isolated"

    def _release(self, command: dict) -> str:
        self.isolated = False
        if self.worker is not None:
            self.worker.wake()
        return "released"

    def _restart(self, command: dict) -> str:
        if self._on_restart is None:
            log.warning("Restart requested, but no restart hook is configured: carrying on")
            return "restart acknowledged; no restart hook configured, nothing restarted"
        self._restart_command = command
        return "restarting"

    def _config(self, command: dict) -> str:
        args = command.get("args") or {}
        self.remote_config.update(args)
        return f"config applied: {', '.join(sorted(args)) or 'no keys'}"
