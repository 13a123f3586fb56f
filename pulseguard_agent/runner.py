"""The agent's heartbeat loop: report, receive commands, carry them out, acknowledge.

Commands arrive in heartbeat responses (agents never need an inbound port) and are
delivered once, so every command is acknowledged, and an acknowledgement that could not
be sent is kept and sent again with the next heartbeat. Telemetry (host, GPU and LLM
samples) runs beside the loop on its own schedule (telemetry.py).
"""

from __future__ import annotations

import logging
import signal
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

from pulseguard_agent.backoff import Backoff
from pulseguard_agent.buffer import TelemetryBuffer, default_buffer
from pulseguard_agent.client import Client
from pulseguard_agent.config import AgentConfig, TelemetryConfig
from pulseguard_agent.errors import AgentRejected, PulseGuardError, ServerUnavailable
from pulseguard_agent.host import finite_readings, host_readings
from pulseguard_agent.telemetry import Telemetry

log = logging.getLogger(__name__)

STATES = ("idle", "busy", "draining")
DEFAULT_INTERVAL_S = 30.0
Handler = Callable[[dict], "str | None"]

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
    ):
        self.client = client
        self.config = config
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

    # --- state -----------------------------------------------------------------------

    @property
    def state(self) -> str:
        """What the agent says it is doing: idle, busy or draining."""
        return self._state

    @state.setter
    def state(self, value: str) -> None:
        if value not in STATES:
            raise ValueError(f"state must be one of {', '.join(STATES)} (got {value!r})")
        self._state = value

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
        failures = 0
        try:
            while not self._stop.is_set():
                try:
                    self.run_once()
                    if failures:
                        log.info("Server reachable again after %d failed heartbeat(s)", failures)
                    failures, delay = 0, self.heartbeat_interval_s
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
            if self._telemetry_started:
                self._telemetry_started = False
                self.telemetry.stop(send=self.error is None)  # type: ignore[union-attr]
            if self.error is None:
                self._say_goodbye()
        if self.error is not None:  # rejected while sending telemetry
            raise self.error

    def run_once(self) -> dict:
        """One heartbeat with readings; carries out and acknowledges the commands it returns."""
        try:
            response = self.client.heartbeat(self.state, self._collect_readings(), attempts=1)
        except ServerUnavailable:
            self._reachable = False
            raise
        self._reachable = True
        self.last_response = response
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

    def _start_telemetry(self) -> None:
        if self.telemetry is None and self._build_telemetry:
            settings = self.config.telemetry if self.config is not None else TelemetryConfig.from_env()
            if settings.enabled:
                agent = self.config.name if self.config is not None else str(self.client.agent_id)
                self.telemetry = Telemetry.from_config(self.client, settings, agent=agent)
        if self.telemetry is not None and not self.telemetry.running:
            self.telemetry.start(on_rejected=self._telemetry_rejected)
            self._telemetry_started = True

    def _telemetry_rejected(self, exc: PulseGuardError) -> None:
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
        self.state = "draining"
        return "draining: taking no new work"

    def _isolate(self, command: dict) -> str:
        self.isolated = True
        return "isolated"

    def _release(self, command: dict) -> str:
        self.isolated = False
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
