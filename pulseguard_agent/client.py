"""HTTP client for the PulseGuard agent API (register, heartbeat, ack, goodbye, metrics, tasks).

Persistent connections per `Client` (see transport.py), each opened on first use: one for
the control path (register, heartbeat, acks), one for telemetry, one for task claims and
one for the other task calls, so a large batch upload or a claim waiting 20 s for work
never holds up a heartbeat or a lease renewal. Retries with backoff for transient
failures live here, where the meaning of each status code is known.
"""

from __future__ import annotations

import http.client
import json
import logging
import platform
import random
import ssl
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any
from urllib.parse import quote, urlsplit

from pulseguard_agent._version import __version__
from pulseguard_agent.backoff import Backoff
from pulseguard_agent.errors import ERROR_TYPES, TASK_LOST_CODES, PulseGuardError, ServerUnavailable, TaskLost
from pulseguard_agent.samples import chunks, encode_batch, prepare
from pulseguard_agent.transport import Connection

log = logging.getLogger(__name__)

USER_AGENT = f"pulseguard-agent/{__version__} python/{platform.python_version()}"
_MAX_RETRY_AFTER_S = 300.0
_MAX_ACK_MESSAGE = 1000  # the server rejects longer messages; an exception text may be longer
_MAX_FAIL_MESSAGE = 4000
MAX_CLAIM = 50  # tasks per claim, the server's limit
MAX_WAIT_S = 30.0  # the server's longest long poll


class Client:
    """Talks to one PulseGuard server as one agent.

    Pass `token` and `agent_id` to resume an identity you stored, or call `register()`.
    Transient failures (connection errors, 5xx, 429) are retried up to `max_attempts`
    times with exponential backoff and jitter; other 4xx raise `PulseGuardError` at once.
    `sleep` and `rng` are injectable so tests need not wait. Safe to share between
    threads: requests on the one connection are serialized.
    """

    def __init__(
        self,
        url: str,
        token: str | None = None,
        agent_id: str | None = None,
        timeout: float = 10,
        *,
        max_attempts: int = 4,
        backoff: Backoff | None = None,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ):
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"PulseGuard URL must be http:// or https://host[:port][/prefix], got {url!r}")
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self.url = url.rstrip("/")
        self.token = token
        self.agent_id = agent_id
        self.timeout = timeout
        self.max_attempts = max_attempts
        self.backoff = backoff or Backoff(rng=rng or random.Random())
        self.sleep = sleep
        self.heartbeat_interval_s: int | None = None
        self.last_latency_ms: float | None = None
        self._prefix = parts.path.rstrip("/")
        self._connection = Connection(parts.scheme, parts.hostname, parts.port, timeout, ssl_context)
        self._metrics_connection = Connection(parts.scheme, parts.hostname, parts.port, timeout, ssl_context)
        self._claim_connection = Connection(parts.scheme, parts.hostname, parts.port, timeout, ssl_context)
        self._task_connection = Connection(parts.scheme, parts.hostname, parts.port, timeout, ssl_context)

    # --- the API ---------------------------------------------------------------------

    @property
    def registered(self) -> bool:
        """Whether this client holds an identity (a token and an agent id)."""
        return bool(self.token and self.agent_id)

    def register(
        self,
        enrollment_key: str,
        name: str,
        capabilities: Iterable[str] = (),
        labels: Mapping[str, str] | None = None,
        version: str = __version__,
        host: Mapping[str, Any] | None = None,
        model: str = "",
        provider: str = "",
        kind: str = "agent",
        replace: bool = False,
        *,
        attempts: int | None = None,
    ) -> dict:
        """Register as `name` with an enrollment key; keeps and returns the new token and id.

        `host` defaults to this machine's inventory (hostname, OS, CPUs, memory, GPUs).
        With replace=True an existing agent of that name is taken over: same id and
        history, and its old token stops working. A registration retried after a lost
        response may find its own name taken (409 name_taken) unless replace=True.
        """
        if host is None:
            from pulseguard_agent.host import host_inventory  # psutil only when it is needed

            host = host_inventory()
        body = {
            "name": name,
            "kind": kind,
            "capabilities": list(capabilities),
            "labels": dict(labels or {}),
            "version": version,
            "host": dict(host),
            "model": model,
            "provider": provider,
            "replace": replace,
        }
        data, _ = self._request("POST", "/api/v1/agents/register", body, bearer=enrollment_key, attempts=attempts)
        self.token = data["token"]
        self.agent_id = str(data["id"])
        self.heartbeat_interval_s = data.get("heartbeat_interval_s")
        self.last_latency_ms = None  # a new identity starts a new latency series
        return data

    def heartbeat(self, state: str = "idle", readings: Mapping[str, Any] | None = None, *,
                  task_ids: Iterable[int] | None = None, attempts: int | None = None) -> dict:
        """Report state (and readings); returns `{"commands": [...], "heartbeat_interval_s", "status", "tasks"}`.

        `task_ids` (the tasks this agent holds) renews their leases too: `tasks` in the
        answer is then `{"renewed": [...], "lost": [...]}`. The round trip of this
        heartbeat is measured and sent as `latency_ms` with the next one, so the server
        sees the latency its agents actually experience.
        """
        body: dict[str, Any] = {"state": state}
        if readings is not None:
            body["readings"] = dict(readings)
        if task_ids:
            body["task_ids"] = [int(i) for i in task_ids]
        if self.last_latency_ms is not None:
            body["latency_ms"] = self.last_latency_ms
        # A failed heartbeat measured nothing; do not report an older figure as the previous one.
        self.last_latency_ms = None
        data, elapsed_s = self._request("POST", self._agent_path("heartbeat"), body, bearer=self._token(), attempts=attempts)
        self.last_latency_ms = round(min(elapsed_s * 1000.0, 600_000.0), 3)
        if data.get("heartbeat_interval_s"):
            self.heartbeat_interval_s = data["heartbeat_interval_s"]
        return data

    def ack(self, command_id: str, ok: bool = True, message: str = "", *, attempts: int | None = None) -> dict:
        """Acknowledge a command from a heartbeat: `ok` says whether it was carried out."""
        body = {"ok": bool(ok), "message": str(message)[:_MAX_ACK_MESSAGE]}
        path = self._agent_path(f"commands/{quote(str(command_id), safe='')}/ack")
        data, _ = self._request("POST", path, body, bearer=self._token(), attempts=attempts)
        return data

    def goodbye(self, *, attempts: int | None = None) -> None:
        """Tell the server this agent is shutting down on purpose (offline, not an alarm)."""
        self._request("POST", self._agent_path("goodbye"), None, bearer=self._token(), attempts=attempts)

    def send_metrics(self, samples: Iterable[Mapping[str, Any]], *, attempts: int | None = None) -> dict:
        """Send telemetry samples (docs/telemetry.md), gzip-compressed, in batches of at most 5,000.

        Returns `{"accepted": n, "by_kind": {...}}` summed over the batches. Batches go in
        order and the first one refused raises: the batches before it were stored, and the
        server stores nothing of a refused batch, so resending from the failed one is safe.
        Raises ValueError (before sending anything) for a sample that is not one. To have
        samples buffered, spooled while the server is down and replayed, use
        `TelemetrySender` (what `AgentRunner` does).
        """
        prepared = [prepare(sample) for sample in samples]
        total: dict[str, Any] = {"accepted": 0, "by_kind": {}}
        for batch in chunks(prepared):
            data = self.send_metrics_payload(encode_batch(batch), attempts=attempts)
            total["accepted"] += int(data.get("accepted") or 0)
            for kind, n in (data.get("by_kind") or {}).items():
                total["by_kind"][kind] = total["by_kind"].get(kind, 0) + n
        return total

    def send_metrics_payload(self, payload: bytes, *, attempts: int | None = None) -> dict:
        """POST one encoded batch (`samples.encode_batch`: gzip-compressed JSON); returns the answer."""
        data, _ = self._request("POST", self._agent_path("metrics"), payload, bearer=self._token(), attempts=attempts,
                                content_encoding="gzip", connection=self._metrics_connection)
        return data

    # --- tasks (docs/routing.md) -----------------------------------------------------

    def claim_tasks(self, limit: int = 1, wait: float = 0, *, attempts: int | None = None) -> list[dict]:
        """Lease up to `limit` tasks this agent can run, waiting up to `wait` seconds (at most 30) for one.

        Returns the claimed tasks (`id`, `kind`, `payload`, `attempt`, `lease_expires_at`,
        `attempt_timeout_s`, `resource_class`, `vram_mb`), or [] when none came in time.
        The claim has its own connection, with a read timeout of `wait` plus the client
        timeout, so a waiting claim holds up nothing else. Retried like every request: a
        claim whose answer was lost leaves its tasks leased until their leases run out,
        and the server then gives them out again.
        """
        if not 1 <= limit <= MAX_CLAIM:
            raise ValueError(f"limit must be between 1 and {MAX_CLAIM} (got {limit})")
        if not 0 <= wait <= MAX_WAIT_S:
            raise ValueError(f"wait must be between 0 and {MAX_WAIT_S:g} seconds (got {wait})")
        data, _ = self._request("POST", "/api/v1/tasks/claim", {"limit": int(limit), "wait": float(wait)},
                                bearer=self._token(), attempts=attempts, connection=self._claim_connection,
                                timeout=self.timeout + wait)
        return list(data.get("tasks") or [])

    def abort_claim(self) -> None:
        """Make a claim waiting in another thread fail at once (ServerUnavailable); for a prompt shutdown.

        Tasks the server leased in the answer that never arrives are given out again
        when their leases run out, or at once after `goodbye()`.
        """
        self._claim_connection.interrupt()

    def renew_tasks(self, task_ids: Iterable[int], *, attempts: int | None = None) -> dict:
        """Extend the leases of tasks this agent holds; returns `{"renewed": [...], "lost": [...]}`.

        Stop working on the tasks in `lost` (cancelled, reassigned, or the lease ran out).
        """
        ids = [int(i) for i in task_ids]
        if not ids:
            return {"renewed": [], "lost": []}
        data, _ = self._request("POST", "/api/v1/tasks/renew", {"task_ids": ids}, bearer=self._token(),
                                attempts=attempts, connection=self._task_connection)
        return {"renewed": list(data.get("renewed") or []), "lost": list(data.get("lost") or [])}

    def complete_task(self, task_id: int, result: Mapping[str, Any] | None = None, *, attempts: int | None = None) -> dict:
        """Finish a task this agent holds with its `result` (a JSON object); returns the task.

        Raises TaskLost if the agent no longer holds it (its `code` says why), and
        ValueError or TypeError, before sending, for a result JSON cannot carry. A retry
        after a lost answer may meet `already_finished`: the first try got through.
        """
        return self._task_action(task_id, "complete", {"result": dict(result or {})}, attempts)

    def fail_task(self, task_id: int, error_type: str = "agent_error", message: str = "", retryable: bool = True, *,
                  attempts: int | None = None) -> dict:
        """Report that an attempt failed; the server retries the task per its policy. Returns the task.

        `error_type` is one of timeout, connection, rate_limit, serialization, lease_lost,
        agent_error, rejected, resource, cancelled, unknown (rejected and serialization are
        never retried); `retryable=False` ends the task now. Raises TaskLost as
        `complete_task` does.
        """
        if error_type not in ERROR_TYPES:
            raise ValueError(f"error_type must be one of {', '.join(ERROR_TYPES)} (got {error_type!r})")
        body = {"error_type": error_type, "message": str(message)[:_MAX_FAIL_MESSAGE], "retryable": bool(retryable)}
        return self._task_action(task_id, "fail", body, attempts)

    def close(self) -> None:
        """Close the connections; the next request opens a new one."""
        self._connection.close()
        self._metrics_connection.close()
        self._claim_connection.close()
        self._task_connection.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Client(url={self.url!r}, agent_id={self.agent_id!r})"

    # --- plumbing --------------------------------------------------------------------

    def _token(self) -> str:
        if not self.registered:
            raise RuntimeError("This client has no identity: call register() or pass token= and agent_id=")
        return self.token  # type: ignore[return-value]

    def _agent_path(self, tail: str) -> str:
        return f"/api/v1/agents/{quote(str(self.agent_id), safe='')}/{tail}"

    def _task_action(self, task_id: int, action: str, body: Mapping[str, Any], attempts: int | None) -> dict:
        path = f"/api/v1/tasks/{int(task_id)}/{action}"
        try:
            data, _ = self._request("POST", path, body, bearer=self._token(), attempts=attempts,
                                    connection=self._task_connection)
        except PulseGuardError as exc:
            if exc.status in (404, 409) and exc.code in TASK_LOST_CODES:
                raise TaskLost(int(task_id), exc.code, exc.message, exc.status) from exc
            raise
        return data

    def _request(
        self, method: str, path: str, body: Mapping[str, Any] | bytes | None, *, bearer: str, attempts: int | None,
        content_encoding: str | None = None, connection: Connection | None = None, timeout: float | None = None,
    ) -> tuple[dict, float]:
        """Send with retries; returns (parsed JSON body, seconds the successful round trip took).

        `body` is a mapping to send as JSON, or JSON already encoded (and compressed with
        `content_encoding`).
        """
        attempts = attempts or self.max_attempts
        connection = connection or self._connection
        if body is None or isinstance(body, bytes):
            payload = body
        else:
            payload = json.dumps(body, separators=(",", ":"), allow_nan=False).encode()
        headers = {"Authorization": f"Bearer {bearer}", "Accept": "application/json", "User-Agent": USER_AGENT}
        if payload is not None:
            headers["Content-Type"] = "application/json"
        if content_encoding:
            headers["Content-Encoding"] = content_encoding
        for attempt in range(1, attempts + 1):
            retry_after = None
            try:
                status, response_headers, raw, elapsed = connection.send(method, self._prefix + path, payload, headers,
                                                                         timeout)
            except (OSError, http.client.HTTPException) as exc:
                error: PulseGuardError = ServerUnavailable(f"Cannot reach {self.url}: {type(exc).__name__}: {exc}")
            else:
                if status < 400:
                    return _parse_body(raw), elapsed
                error = _error_from_response(status, raw)
                if not error.transient:
                    raise error
                retry_after = _retry_after(response_headers.get("Retry-After"))
            if attempt == attempts:
                raise error
            delay = retry_after if retry_after is not None else self.backoff.delay(attempt)
            log.warning("%s %s failed (%s); retry %d/%d in %.1fs", method, path, error, attempt, attempts - 1, delay)
            self.sleep(delay)
        raise AssertionError("unreachable")  # the loop always returns or raises


def _parse_body(raw: bytes) -> dict:
    if not raw.strip():
        return {}
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise ServerUnavailable(f"The server answered with something other than JSON: {raw[:200]!r}") from exc
    return data if isinstance(data, dict) else {"data": data}


def _error_from_response(status: int, raw: bytes) -> PulseGuardError:
    code, message, fields, samples = f"http_{status}", f"HTTP {status}", {}, []
    try:
        error = json.loads(raw).get("error") or {}
        code = error.get("code") or code
        message = error.get("message") or message
        fields = error.get("fields") or {}
        # docs/telemetry.md puts the bad samples in error.samples; accept them under fields too.
        samples = error.get("samples") or (fields.get("samples") if isinstance(fields, dict) else None) or []
    except (ValueError, AttributeError):
        # A proxy's HTML error page, say: keep a little of it for the log.
        text = " ".join(raw[:300].decode("utf-8", "replace").split())[:200]
        message = f"{message}: {text}" if text else message
    if status == 429 or status >= 500:
        return ServerUnavailable(message, status=status, code=code)
    return PulseGuardError(status, code, message, fields, samples if isinstance(samples, list) else [])


def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (the delta-seconds form; dates fall back to backoff)."""
    if not value:
        return None
    try:
        return min(max(float(value), 0.0), _MAX_RETRY_AFTER_S)
    except ValueError:
        return None
