"""The heartbeat endpoint as a small ASGI app in front of Django.

Every agent calls `POST /api/v1/agents/{id}/heartbeat` every few seconds, so this one
path skips Django's request machinery: under ASGI that machinery hops between the event
loop and threads about twenty times per request (bench/README.md measured ~6 ms of CPU
per heartbeat, almost all of it in those hops). Here a request is parsed and validated
on the event loop by the same DRF serializer the OpenAPI view uses (its rules compiled
into a fast check for ordinary bodies: apps/core/fastvalidate.py), then joins a group
commit: heartbeats arriving within 2 ms share one statement and one transaction
(`services.agent_heartbeats_record`). Each request still gets its own answer, only after
its batch committed, with the same JSON and error codes as the DRF view
(`views.AgentHeartbeatApi`, which serves the schema and the Django test client).
"""

from __future__ import annotations

import json
import re
import time
import uuid

import structlog
from django.conf import settings
from django.db import connection
from prometheus_client import Counter, Histogram

from apps.agents import services
from apps.agents.api.serializers import HeartbeatInputSerializer
from apps.core.api import validation_error_body
from apps.core.batching import GroupCommit
from apps.core.errors import ApplicationError, error_body
from apps.core.fastvalidate import compile_serializer
from apps.core.middleware import REQUEST_ID_OK
from apps.core.tokens import bearer_required

log = structlog.get_logger(__name__)

PATH = re.compile(r"^/api/v1/agents/(?P<agent_id>[0-9a-fA-F-]{32,36})/heartbeat$")

HEARTBEATS = Counter("pulseguard_heartbeats", "Heartbeat requests answered, by HTTP status", ["status"])
HEARTBEAT_SECONDS = Histogram(
    "pulseguard_heartbeat_seconds", "Heartbeat request latency (parse to answer, including the group commit)",
    buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)


# The serializer's rules, compiled once (apps/core/fastvalidate.py): ~3 µs instead of ~240.
_fast_check = compile_serializer(HeartbeatInputSerializer)


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not valid JSON")


def _write_batch(beats: list[services.Heartbeat]) -> list:
    """Runs on one of a few long-lived group-commit threads.

    Each thread keeps its pooled connection between batches (checking one out and
    re-initialising it per batch cost more than the write); a connection that saw an
    error is dropped and the next batch gets a fresh one.
    """
    try:
        return services.agent_heartbeats_record(beats=beats)
    except Exception:
        connection.close()
        raise


class HeartbeatEndpoint:
    """ASGI app: answers heartbeats, hands every other request to `app`."""

    def __init__(self, app, *, max_batch: int = 200, max_wait_s: float = 0.002, threads: int = 4):
        self.app = app
        self.max_body = settings.PULSEGUARD_MAX_BODY_BYTES
        self.commit = GroupCommit(
            _write_batch, key=lambda beat: beat.agent_id, max_batch=max_batch, max_wait_s=max_wait_s,
            threads=threads, name="heartbeat",
        )

    def close_connections(self) -> None:
        """Hand the write threads' connections back (tests, before the database is dropped)."""
        self.commit.on_every_thread(lambda: connection.close())  # resolved on each thread

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["method"] == "POST":
            match = PATH.match(scope["path"])
            if match:
                return await self.handle(scope, receive, send, match["agent_id"])
        return await self.app(scope, receive, send)

    async def handle(self, scope, receive, send, raw_id: str) -> None:
        started = time.perf_counter()
        headers = {name.decode("latin-1"): value.decode("latin-1") for name, value in scope["headers"]}
        request_id = headers.get("x-request-id", "")
        if not REQUEST_ID_OK.match(request_id):
            request_id = uuid.uuid4().hex
        structlog.contextvars.bind_contextvars(request_id=request_id)
        try:
            body = await _read_body(receive, self.max_body)
            if body is None:
                return  # the client went away
            status, payload = await self._answer(raw_id, headers, body)
        except Exception:
            log.exception("heartbeat_failed", path=scope["path"])
            status, payload = 500, error_body("server_error", "The heartbeat could not be recorded; retry it")
        finally:
            structlog.contextvars.unbind_contextvars("request_id")
        data = json.dumps(payload, separators=(",", ":")).encode()
        await send({
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(data)).encode()),
                (b"x-request-id", request_id.encode()),
                (b"x-content-type-options", b"nosniff"),
            ],
        })
        await send({"type": "http.response.body", "body": data})
        HEARTBEATS.labels(status=str(status)).inc()
        HEARTBEAT_SECONDS.observe(time.perf_counter() - started)

    async def _answer(self, raw_id: str, headers: dict, body: bytes | int) -> tuple[int, dict]:
        if isinstance(body, int):
            return 413, error_body("body_too_large", f"Request body is over {self.max_body} bytes")
        try:
            token = bearer_required(headers.get("authorization"))
        except ApplicationError as exc:
            return exc.status_code, error_body(exc.code, exc.message)
        try:
            agent_id = uuid.UUID(raw_id)
        except ValueError:
            return 404, error_body("not_found", f"No such endpoint or object: /api/v1/agents/{raw_id}/heartbeat")
        if body and not headers.get("content-type", "").startswith("application/json"):
            return 415, error_body("unsupported_media_type", "Send the body as application/json")
        try:
            data = json.loads(body, parse_constant=_refuse_constant) if body else {}
        except ValueError as exc:
            return 400, error_body("malformed_json", f"JSON parse error - {exc}")
        validated = _fast_check(data)
        if validated is None:  # not an ordinary body: the serializer decides, and words the error
            serializer = HeartbeatInputSerializer(data=data)
            if not serializer.is_valid():
                return 400, validation_error_body(serializer.errors)
            validated = serializer.validated_data
        beat = services.Heartbeat(agent_id=agent_id, token=token, **validated)
        result = await self.commit.submit(beat)
        if isinstance(result, ApplicationError):
            return result.status_code, error_body(result.code, result.message, result.fields)
        return 200, result.as_dict()


async def _read_body(receive, limit: int) -> bytes | int | None:
    """The whole body; its size (an int) once it passes `limit`; None if the client left."""
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size <= limit:
            chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks) if size <= limit else size
