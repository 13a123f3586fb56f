"""Telemetry samples in the shapes docs/telemetry.md defines, made safe to send, packed into batches.

A sample is a plain dict with `kind` and `ts` (Unix seconds here). A batch is the gzip of
`{"samples": [...]}`: the same bytes are the request body and, while the server cannot
be reached, the spool file, so a spooled batch is replayed without re-encoding it.

The server refuses a whole batch for one bad sample, so what can be checked here is:
figures JSON cannot carry (NaN, infinities) are left out, and `llm_call_sample` refuses
arguments the server would refuse, in the caller, with the reason.
"""

from __future__ import annotations

import gzip
import json
import math
import re
import time
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime, timezone
from typing import Any

MAX_BATCH = 5000  # samples per request, the server's limit
KINDS = ("host", "gpu", "llm", "custom")
REQUIRED = {"host": (), "gpu": ("index",), "llm": ("provider", "model"), "custom": ("name", "value")}
LLM_STATUSES = ("ok", "error")
_ERROR_TYPE_RE = re.compile(r"[a-z][a-z0-9_]{0,63}")
_METRIC_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.:]{0,99}")
_LABEL_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
_MAX_ID = 128  # session, workflow and task ids


def timestamp(ts: float | int | datetime | str | None = None) -> float | str:
    """`ts` as the API takes it: Unix seconds (ms precision), or an RFC 3339 string as given.

    None is now; a naive datetime is taken as UTC (agents' clocks are set to UTC, and
    guessing the local zone would shift a sample by hours).
    """
    if ts is None:
        return round(time.time(), 3)
    if isinstance(ts, datetime):
        if ts.tzinfo is None:
            ts = ts.replace(tzinfo=timezone.utc)
        return round(ts.timestamp(), 3)
    if isinstance(ts, str):
        return ts
    if isinstance(ts, bool) or not isinstance(ts, (int, float)) or not math.isfinite(ts):
        raise ValueError(f"ts must be Unix seconds, a datetime or an RFC 3339 string (got {ts!r})")
    return round(float(ts), 3)


def prepare(sample: Mapping[str, Any]) -> dict:
    """A copy of `sample` without None and non-finite figures; ValueError if it is not a sample.

    A reading a sensor could not take is simply not sent (every measurement is optional),
    but a sample missing what identifies it (kind, ts, a GPU's index, ...) is an error.
    """
    kind = sample.get("kind")
    if kind not in KINDS:
        raise ValueError(f"sample kind must be one of {', '.join(KINDS)} (got {kind!r})")
    clean = {key: value for key, value in sample.items() if _keep(value)}
    if isinstance(clean.get("processes"), list):
        clean["processes"] = [{k: v for k, v in p.items() if _keep(v)} for p in clean["processes"] if isinstance(p, dict)]
    missing = [name for name in ("ts", *REQUIRED[kind]) if name not in clean]
    if missing:
        raise ValueError(f"{kind} sample needs {', '.join(missing)}")
    return clean


def _keep(value: object) -> bool:
    return value is not None and not (isinstance(value, float) and not math.isfinite(value))


def llm_call_sample(
    provider: str,
    model: str,
    operation: str = "chat",
    tokens_in: int = 0,
    tokens_out: int = 0,
    tokens_cached: int = 0,
    latency_ms: float | None = None,
    ttft_ms: float | None = None,
    status: str = "ok",
    error_type: str | None = None,
    cost_usd: float | None = None,
    session_id: str | None = None,
    workflow_id: str | None = None,
    task_id: str | None = None,
    ts: float | datetime | str | None = None,
) -> dict:
    """One LLM call as a `kind: llm` sample; ValueError for what the server would refuse.

    `tokens_in` counts every prompt token, cached ones included; `tokens_cached` is the
    part served from the provider's prompt cache. Leave `cost_usd` out to have the server
    price the call from its price table.
    """
    problems = []
    if not isinstance(provider, str) or not 0 < len(provider) <= 64:
        problems.append("provider must be 1-64 characters")
    if not isinstance(model, str) or not 0 < len(model) <= 128:
        problems.append("model must be 1-128 characters")
    if not isinstance(operation, str) or len(operation) > 32:
        problems.append("operation must be at most 32 characters")
    for name, value in (("tokens_in", tokens_in), ("tokens_out", tokens_out), ("tokens_cached", tokens_cached)):
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**31:
            problems.append(f"{name} must be a whole number >= 0")
    for name, value in (("latency_ms", latency_ms), ("ttft_ms", ttft_ms), ("cost_usd", cost_usd)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 3.6e6):
            problems.append(f"{name} must be a number >= 0")
    if status not in LLM_STATUSES:
        problems.append(f"status must be ok or error (got {status!r})")
    if error_type is not None:
        if status != "error":
            problems.append("error_type goes only with status='error'")
        elif not isinstance(error_type, str) or not _ERROR_TYPE_RE.fullmatch(error_type):
            problems.append("error_type must be lower_snake_case, at most 64 characters")
    for name, value in (("session_id", session_id), ("workflow_id", workflow_id), ("task_id", task_id)):
        if value is not None and len(str(value)) > _MAX_ID:
            problems.append(f"{name} must be at most {_MAX_ID} characters")
    if problems:
        raise ValueError("Invalid LLM call: " + "; ".join(problems))
    sample: dict[str, Any] = {
        "kind": "llm", "ts": timestamp(ts), "provider": provider, "model": model, "operation": operation,
        "tokens_in": tokens_in, "tokens_out": tokens_out, "tokens_cached": tokens_cached, "status": status,
    }
    optional = {"latency_ms": latency_ms, "ttft_ms": ttft_ms, "error_type": error_type, "cost_usd": cost_usd}
    sample.update({key: round(float(value), 3) if key != "error_type" else value
                   for key, value in optional.items() if value is not None})
    ids = {"session_id": session_id, "workflow_id": workflow_id, "task_id": task_id}
    sample.update({key: str(value) for key, value in ids.items() if value is not None})
    return sample


def metric_sample(name: str, value: float, *, type: str = "gauge", labels: Mapping[str, str] | None = None,
                  ts: float | datetime | str | None = None) -> dict:
    """A `kind: custom` sample (your own gauge or counter); ValueError for what the server would refuse."""
    if not isinstance(name, str) or not _METRIC_NAME_RE.fullmatch(name):
        raise ValueError(f"metric name {name!r} must match {_METRIC_NAME_RE.pattern}")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"metric {name} needs a finite number (got {value!r})")
    if type not in ("gauge", "counter"):
        raise ValueError(f"metric type must be gauge or counter (got {type!r})")
    labels = dict(labels or {})
    if len(labels) > 16 or not all(_LABEL_NAME_RE.fullmatch(str(k)) and len(str(v)) <= 200 for k, v in labels.items()):
        raise ValueError("labels: at most 16, names like [A-Za-z_][A-Za-z0-9_]*, values at most 200 characters")
    sample = {"kind": "custom", "ts": timestamp(ts), "name": name, "type": type, "value": value}
    if labels:
        sample["labels"] = {str(k): str(v) for k, v in labels.items()}
    return sample


def chunks(samples: list[dict], size: int = MAX_BATCH) -> Iterator[list[dict]]:
    """`samples` in consecutive slices of at most `size`."""
    for start in range(0, len(samples), size):
        yield samples[start:start + size]


def encode_batch(samples: Iterable[dict]) -> bytes:
    """The request body for one batch: gzip-compressed `{"samples": [...]}` JSON."""
    raw = json.dumps({"samples": list(samples)}, separators=(",", ":"), allow_nan=False).encode()
    # mtime=0: the same batch gives the same bytes (and the header carries no clock).
    return gzip.compress(raw, compresslevel=6, mtime=0)


def decode_batch(payload: bytes) -> list[dict]:
    """The samples of an encoded batch; ValueError if it is not one (a damaged spool file)."""
    try:
        data = json.loads(gzip.decompress(payload))
    except (OSError, EOFError, ValueError) as exc:
        raise ValueError(f"not an encoded batch: {exc}") from exc
    samples = data.get("samples") if isinstance(data, dict) else None
    if not isinstance(samples, list):
        raise ValueError("not an encoded batch: no samples list")
    return samples
