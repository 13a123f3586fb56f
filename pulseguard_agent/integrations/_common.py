"""What the provider wrappers share: timing a call, naming its error, recording it safely.

Recording must never change what the application sees: the wrapped call returns exactly
what the original returned and raises exactly what it raised, and a failure to record
(a bad value, a full buffer) is logged, not raised.
"""

from __future__ import annotations

import functools
import inspect
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

log = logging.getLogger("pulseguard_agent.integrations")

Usage = Callable[[Any], dict]  # response -> {"tokens_in", "tokens_out", "tokens_cached"}
Context = Mapping[str, Any] | Callable[[], Mapping[str, Any]] | None
_CONTEXT_KEYS = ("session_id", "workflow_id", "task_id")


class Recorder(Protocol):
    def record_llm_call(self, provider: str, model: str, **fields: Any) -> Any: ...


_TIMEOUT = {"APITimeoutError", "Timeout", "TimeoutError", "ReadTimeout", "ConnectTimeout", "TimeoutException"}
_RATE_LIMIT = {"RateLimitError"}
_AUTH = {"AuthenticationError", "PermissionDeniedError"}
_INVALID = {"BadRequestError", "UnprocessableEntityError", "NotFoundError", "ConflictError", "RequestTooLargeError"}
_SERVER = {"InternalServerError", "OverloadedError", "ServiceUnavailableError"}
_CONNECTION = {"APIConnectionError", "ConnectionError", "ConnectError"}


def error_type(exc: BaseException) -> str:
    """rate_limit, timeout, server_error, invalid_request, auth, connection or other.

    By the exception's class names (the SDKs' own hierarchy, without importing them),
    then by the HTTP status it carries.
    """
    names = {cls.__name__ for cls in type(exc).__mro__}
    status = getattr(exc, "status_code", None) or getattr(getattr(exc, "response", None), "status_code", None)
    status = status if isinstance(status, int) else None
    if names & _RATE_LIMIT or status == 429:
        return "rate_limit"
    if names & _TIMEOUT or status in (408, 504):  # before connection: APITimeoutError is an APIConnectionError
        return "timeout"
    if names & _AUTH or status in (401, 403):
        return "auth"
    if names & _INVALID or status in (400, 404, 409, 413, 422):
        return "invalid_request"
    if names & _SERVER or (status is not None and status >= 500):
        return "server_error"
    if names & _CONNECTION:
        return "connection"
    return "other"


def field(obj: Any, *path: str) -> Any:
    """obj.a.b (or obj["a"]["b"]), None where any step is missing."""
    for name in path:
        if obj is None:
            return None
        obj = obj.get(name) if isinstance(obj, Mapping) else getattr(obj, name, None)
    return obj


def count(value: Any) -> int:
    """A token count from a usage object: a whole number >= 0, 0 when absent."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def wrap(create: Callable[..., Any], *, recorder: Recorder | None, provider: str, operation: str, usage: Usage,
         context: Context) -> Callable[..., Any]:
    """`create`, timed and recorded: the same arguments, result and exceptions."""
    if getattr(create, "__pulseguard_wrapped__", False):
        return create  # instrumenting twice must not record every call twice
    if inspect.iscoroutinefunction(create):
        raise TypeError("Only synchronous clients can be instrumented (this one's create() is async)")

    @functools.wraps(create)
    def instrumented(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            result = create(*args, **kwargs)
        except Exception as exc:
            _record(recorder, provider, _model(kwargs, None), operation, context, status="error",
                    error_type=error_type(exc), latency_ms=_ms_since(started))
            raise
        if kwargs.get("stream"):
            # The stream is returned untouched, so its tokens are not seen: record the call and
            # its time to first response only.
            _record(recorder, provider, _model(kwargs, result), operation, context, ttft_ms=_ms_since(started))
        else:
            _record(recorder, provider, _model(kwargs, result), operation, context,
                    latency_ms=_ms_since(started), **_safe_usage(usage, result))
        return result

    instrumented.__pulseguard_wrapped__ = True  # type: ignore[attr-defined]
    return instrumented


def _model(kwargs: Mapping[str, Any], result: Any) -> str:
    # The model asked for: what the code names and prices are keyed by (the server prices
    # gpt-4o-2024-08-06 as gpt-4o either way).
    model = kwargs.get("model") or field(result, "model")
    return str(model)[:128] if model else "unknown"


def _ms_since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000.0, 3)


def _safe_usage(usage: Usage, result: Any) -> dict:
    try:
        return usage(result)
    except Exception:  # an unexpected response shape must not break the caller
        log.debug("Could not read token usage from %r", type(result), exc_info=True)
        return {}


def _record(recorder: Recorder | None, provider: str, model: str, operation: str, context: Context,
            **fields: Any) -> None:
    try:
        extra = context() if callable(context) else (context or {})
        fields.update({key: extra[key] for key in _CONTEXT_KEYS if extra.get(key) is not None})
        if recorder is None:
            from pulseguard_agent.buffer import record_llm_call

            record_llm_call(provider, model, operation=operation, **fields)
        else:
            recorder.record_llm_call(provider, model, operation=operation, **fields)
    except Exception:
        log.warning("Could not record an LLM call to %s/%s", provider, model, exc_info=True)
