"""Validation of telemetry batches: fast, complete, and all-or-nothing.

A batch of 5,000 samples must be checked in milliseconds, so the rules are plain data
(field -> check) run by one tight loop rather than a DRF serializer per sample (~100 µs
each). Every bad sample is reported with its index, field and reason; a batch with any
bad sample is refused whole. The output is rows in the column order of the tables
(apps/metrics/schema.py), ready for COPY.
"""

from __future__ import annotations

import math
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from datetime import timezone as dt_timezone
from typing import Any

from apps.metrics.schema import GPU_COLUMNS, HOST_COLUMNS

MAX_ERRORS = 100  # reported per batch; the count says how many there were in all
FUTURE_SLACK = timedelta(minutes=5)


class Bad(Exception):
    pass


def _number(lo: float | None = None, hi: float | None = None, *, optional: bool = False) -> Callable[[Any], float]:
    # Finite bounds for the fast path: infinities and NaN fail it and meet the checks below.
    lo_f = lo if lo is not None else -sys.float_info.max
    hi_f = hi if hi is not None else sys.float_info.max

    def check(v):
        if type(v) is float:
            if lo_f <= v <= hi_f:
                return v  # the common case, in one comparison
        elif v is None and optional:
            return None
        elif type(v) is not int:  # bool is an int subclass, not an int: refused too
            raise Bad("must be a number")
        if not math.isfinite(v):
            raise Bad("must be a finite number")
        if lo is not None and v < lo:
            raise Bad(f"must be at least {lo}")
        if hi is not None and v > hi:
            raise Bad(f"must be at most {hi}")
        return v
    return check


def _integer(lo: int = 0, hi: int = 2**62, *, optional: bool = False) -> Callable[[Any], int]:
    def check(v):
        if type(v) is int and lo <= v <= hi:
            return v
        if v is None and optional:
            return None
        if type(v) is float and v.is_integer():
            v = int(v)
        if type(v) is not int:
            raise Bad("must be an integer")
        if v < lo or v > hi:
            raise Bad(f"must be between {lo} and {hi}")
        return v
    return check


def _text(max_length: int, *, blank: bool = True, pattern: re.Pattern | None = None) -> Callable[[Any], str]:
    def check(v):
        if type(v) is not str:
            raise Bad("must be a string")
        if len(v) > max_length:
            raise Bad(f"must be at most {max_length} characters")
        if not blank and not v:
            raise Bad("must not be blank")
        if pattern is not None and not pattern.fullmatch(v):
            raise Bad(f"must match {pattern.pattern}")
        return v
    return check


def _choice(*values: str) -> Callable[[Any], str]:
    allowed = frozenset(values)

    def check(v):
        if v not in allowed:
            raise Bad(f"must be one of {', '.join(sorted(allowed))}")
        return v
    return check


def _optional(check):
    def wrapped(v):
        return None if v is None else check(v)
    return wrapped


_LABEL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")


def _labels(v):
    if type(v) is not dict:
        raise Bad("must be an object of strings")
    if len(v) > 16:
        raise Bad("at most 16 labels")
    for key, value in v.items():
        if not _LABEL_NAME.fullmatch(key):
            raise Bad(f"label name {key[:70]!r} must match {_LABEL_NAME.pattern}")
        if type(value) is not str or len(value) > 200:
            raise Bad(f"label {key} must be a string of at most 200 characters")
    return v


_PROCESS_FIELDS = {"pid": _integer(0, 2**31), "name": _text(200), "used_memory_bytes": _integer(optional=True)}


def _processes(v):
    if type(v) is not list or len(v) > 64:
        raise Bad("must be a list of at most 64 processes")
    for p in v:
        if type(p) is not dict or "pid" not in p or set(p) - set(_PROCESS_FIELDS):
            raise Bad("each process is {pid, name?, used_memory_bytes?}")
        for key, value in p.items():
            _PROCESS_FIELDS[key](value)
    return v


percent = _number(0, 100, optional=True)
nonneg = _number(0, optional=True)
count = _integer(optional=True)

HOST_FIELDS = {
    "cpu_percent": percent, "load1": nonneg, "load5": nonneg, "load15": nonneg,
    "memory_used_bytes": count, "memory_total_bytes": count, "disk_used_bytes": count, "disk_total_bytes": count,
    "disk_read_bytes_per_s": nonneg, "disk_write_bytes_per_s": nonneg,
    "net_rx_bytes_per_s": nonneg, "net_tx_bytes_per_s": nonneg,
}
# JSON name -> column, where they differ
HOST_RENAMED = {"disk_read_bytes_per_s": "disk_read_bps", "disk_write_bytes_per_s": "disk_write_bps",
                "net_rx_bytes_per_s": "net_rx_bps", "net_tx_bytes_per_s": "net_tx_bps"}

GPU_FIELDS = {
    "index": _integer(0, 255),
    # Identifies the device to the agent; samples are keyed by index (the agent's
    # inventory maps index -> uuid), so it is checked but not stored per sample.
    "uuid": _text(80),
    "utilization_percent": percent, "memory_util_percent": percent,
    "memory_used_bytes": count, "memory_free_bytes": count, "memory_total_bytes": count,
    "temperature_c": _number(-50, 200, optional=True), "power_w": _number(0, 10_000, optional=True),
    "power_limit_w": _number(0, 10_000, optional=True), "sm_clock_mhz": _number(0, 100_000, optional=True),
    "mem_clock_mhz": _number(0, 100_000, optional=True), "energy_mj": nonneg,
    "ecc_sbe_total": count, "ecc_dbe_total": count, "xid_errors": count,
    "processes": _optional(_processes),
}

_ERROR_TYPE = re.compile(r"[a-z][a-z0-9_]{0,63}")
LLM_FIELDS = {
    "provider": _text(64, blank=False), "model": _text(128, blank=False), "operation": _text(32),
    "tokens_in": _integer(0, 2**31 - 1), "tokens_out": _integer(0, 2**31 - 1), "tokens_cached": _integer(0, 2**31 - 1),
    "latency_ms": _number(0, 3_600_000, optional=True), "ttft_ms": _number(0, 3_600_000, optional=True),
    "status": _choice("ok", "error"), "error_type": _text(64, pattern=_ERROR_TYPE),
    "cost_usd": _number(0, 1_000_000, optional=True),
    "session_id": _text(128), "workflow_id": _text(128), "task_id": _text(128),
}
_METRIC_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.:]{0,99}")
CUSTOM_FIELDS = {
    "name": _text(100, blank=False, pattern=_METRIC_NAME), "type": _choice("gauge", "counter"),
    "value": _number(), "labels": _labels,
}

REQUIRED = {"host": (), "gpu": ("index",), "llm": ("provider", "model"), "custom": ("name", "value")}
FIELDS = {"host": HOST_FIELDS, "gpu": GPU_FIELDS, "llm": LLM_FIELDS, "custom": CUSTOM_FIELDS}
KINDS = tuple(FIELDS)

HOST_ORDER = [HOST_RENAMED.get(name, name) for name in HOST_FIELDS]
assert HOST_ORDER == list(HOST_COLUMNS), "host fields and columns must line up"
GPU_ORDER = [name for name in GPU_FIELDS if name not in ("index", "uuid", "processes")]
assert GPU_ORDER == list(GPU_COLUMNS), "gpu fields and columns must line up"
_HOST_KEYS = list(HOST_FIELDS)


@dataclass
class Batch:
    host: list[tuple]
    gpu: list[tuple]
    llm: list[dict]
    custom: list[tuple]
    minutes: dict[str, set[int]]  # source -> minutes (unix minute numbers) touched

    @property
    def counts(self) -> dict[str, int]:
        return {"host": len(self.host), "gpu": len(self.gpu), "llm": len(self.llm), "custom": len(self.custom)}


def parse_ts(v, *, now: datetime, oldest: datetime) -> datetime:
    if type(v) is str:
        try:
            ts = datetime.fromisoformat(v)
        except ValueError:
            raise Bad("must be an RFC 3339 time or Unix seconds") from None
        if ts.tzinfo is None:
            raise Bad("needs a time zone (e.g. Z)")
    elif (type(v) is float or type(v) is int) and math.isfinite(v):
        try:
            ts = datetime.fromtimestamp(v, dt_timezone.utc)
        except (OverflowError, OSError, ValueError):
            raise Bad("is out of range") from None
    else:
        raise Bad("must be an RFC 3339 time or Unix seconds")
    if ts > now + FUTURE_SLACK:
        raise Bad("is more than 5 minutes in the future (check the agent's clock)")
    if ts < oldest:
        raise Bad(f"is older than the retention ({oldest:%Y-%m-%d %H:%M} UTC)")
    return ts


def batch_validate(samples, *, agent_id, now: datetime, oldest: datetime) -> tuple[Batch, list[dict], int]:
    """Check every sample. Returns (rows, errors (at most MAX_ERRORS), error count)."""
    batch = Batch(host=[], gpu=[], llm=[], custom=[], minutes={"host": set(), "gpu": set(), "llm": set()})
    errors: list[dict] = []
    n_errors = 0

    def bad(index, field, reason):
        nonlocal n_errors
        n_errors += 1
        if len(errors) < MAX_ERRORS:
            errors.append({"index": index, "field": field, "reason": reason})

    for i, sample in enumerate(samples):
        if type(sample) is not dict:
            bad(i, None, "must be an object")
            continue
        kind = sample.get("kind")
        fields = FIELDS.get(kind) if type(kind) is str else None
        if fields is None:
            bad(i, "kind", f"must be one of {', '.join(KINDS)}")
            continue
        try:
            ts = parse_ts(sample.get("ts"), now=now, oldest=oldest)
        except Bad as exc:
            bad(i, "ts", str(exc))
            ts = None
        values = {}
        ok = ts is not None
        for key, value in sample.items():
            if key == "kind" or key == "ts":
                continue
            check = fields.get(key)
            if check is None:
                bad(i, key, "unknown field")
                ok = False
                continue
            try:
                values[key] = check(value)
            except Bad as exc:
                bad(i, key, str(exc))
                ok = False
        for key in REQUIRED[kind]:
            if values.get(key) is None and key not in sample:
                bad(i, key, "is required")
                ok = False
        if kind == "llm" and values.get("error_type") and values.get("status", "ok") != "error":
            bad(i, "error_type", "only with status error")
            ok = False
        if not ok:
            continue
        minute = int(ts.timestamp()) // 60
        if kind == "host":
            batch.host.append((agent_id, ts, *[values.get(k) for k in _HOST_KEYS]))
            batch.minutes["host"].add(minute)
        elif kind == "gpu":
            processes = values.get("processes")
            batch.gpu.append((agent_id, ts, values["index"], *[values.get(k) for k in GPU_ORDER], processes))
            batch.minutes["gpu"].add(minute)
        elif kind == "llm":
            values["ts"] = ts
            batch.llm.append(values)
            batch.minutes["llm"].add(minute)
        else:
            batch.custom.append((agent_id, ts, values["name"], values.get("type", "gauge"), values["value"],
                                 values.get("labels") or {}))
    return batch, errors, n_errors
