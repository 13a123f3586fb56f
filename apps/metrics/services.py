"""Writes of the metrics app: batch ingest (COPY), heartbeat readings, rollups, retention."""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta
from datetime import timezone as dt_timezone

import psycopg
import structlog
from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone
from psycopg.types.json import Jsonb

from apps.core.errors import ApplicationError
from apps.metrics import partitions, rollups
from apps.metrics.pricing import Pricer
from apps.metrics.schema import GPU_COLUMNS, HOST_COLUMNS
from apps.metrics.validation import HOST_RENAMED, batch_validate

log = structlog.get_logger(__name__)

HOST_COPY = f"COPY metrics_host_sample (agent_id, ts, {', '.join(HOST_COLUMNS)}) FROM STDIN (FORMAT BINARY)"
GPU_COPY = f"COPY metrics_gpu_sample (agent_id, ts, gpu_index, {', '.join(GPU_COLUMNS)}, processes) FROM STDIN (FORMAT BINARY)"
LLM_COLUMNS = ["agent_id", "ts", "provider", "model", "operation", "tokens_in", "tokens_out", "tokens_cached",
               "latency_ms", "ttft_ms", "ok", "error_type", "cost_usd", "cost_source", "session_id", "workflow_id", "task_id"]
LLM_COPY = f"COPY metrics_llm_call ({', '.join(LLM_COLUMNS)}) FROM STDIN (FORMAT BINARY)"
CUSTOM_COPY = "COPY metrics_custom_sample (agent_id, ts, name, type, value, labels) FROM STDIN (FORMAT BINARY)"

_PG_TYPES = {"real": "float4", "bigint": "int8", "double precision": "float8"}
HOST_TYPES = ["uuid", "timestamptz", *[_PG_TYPES[t] for t in HOST_COLUMNS.values()]]
GPU_TYPES = ["uuid", "timestamptz", "int2", *[_PG_TYPES[t] for t in GPU_COLUMNS.values()], "jsonb"]
LLM_TYPES = ["uuid", "timestamptz", "text", "text", "text", "int4", "int4", "int4", "float4", "float4", "bool",
             "text", "float8", "text", "text", "text", "text"]
CUSTOM_TYPES = ["uuid", "timestamptz", "text", "text", "float8", "jsonb"]

_PENDING_SQL = """
INSERT INTO metrics_rollup_pending (source, minute)
SELECT %s, to_timestamp(m * 60) FROM unnest(%s::bigint[]) AS m ORDER BY m
ON CONFLICT DO NOTHING
"""


class BatchTooLarge(ApplicationError):
    status_code = 413
    code = "batch_too_large"


def metrics_ingest(*, agent_id, samples) -> dict[str, int]:
    """Validate a batch from one agent and write all of it, or nothing.

    Rows go in by binary COPY, one per kind, in one transaction that also marks the
    minutes they touch for the rollup job and refreshes the agent's latest readings (its
    row and the live dashboard). Raises ApplicationError (400 invalid_samples, 413) with
    every bad sample's index, field and reason.
    """
    if not isinstance(samples, list):
        raise ApplicationError("samples must be a list", code="invalid_samples",
                               fields={"samples": [{"index": None, "field": "samples", "reason": "must be a list"}]})
    limit = settings.PULSEGUARD_METRICS_MAX_BATCH
    if len(samples) > limit:
        raise BatchTooLarge(f"A batch holds at most {limit} samples, not {len(samples)}: split it")
    if not samples:
        return {"host": 0, "gpu": 0, "llm": 0, "custom": 0}
    agent_id = uuid.UUID(str(agent_id))
    now = timezone.now()
    oldest = now - timedelta(days=settings.PULSEGUARD_RETENTION_RAW_DAYS)
    batch, errors, n_errors = batch_validate(samples, agent_id=agent_id, now=now, oldest=oldest)
    if n_errors:
        shown = "" if n_errors == len(errors) else f" (the first {len(errors)} are listed)"
        raise ApplicationError(
            f"{n_errors} problem{'s' if n_errors != 1 else ''} in the batch{shown}; nothing was written",
            code="invalid_samples", fields={"samples": errors},
        )
    llm_rows = []
    if batch.llm:
        pricer = Pricer()
        for call in batch.llm:
            cost, source = pricer.cost(call)
            llm_rows.append((
                agent_id, call["ts"], call["provider"], call["model"], call.get("operation") or "chat",
                call.get("tokens_in", 0), call.get("tokens_out", 0), call.get("tokens_cached", 0),
                call.get("latency_ms"), call.get("ttft_ms"), call.get("status", "ok") == "ok",
                call.get("error_type") or ("unknown" if call.get("status") == "error" else ""),
                cost, source, call.get("session_id", ""), call.get("workflow_id", ""), call.get("task_id", ""),
            ))
    _write(agent_id=agent_id, batch=batch, llm_rows=llm_rows)
    return batch.counts


def _write(*, agent_id, batch, llm_rows, retried: bool = False) -> None:
    try:
        with transaction.atomic():
            connection.ensure_connection()
            with psycopg.Cursor(connection.connection) as cur:
                _copy(cur, HOST_COPY, HOST_TYPES, batch.host)
                _copy(cur, GPU_COPY, GPU_TYPES, [(*row[:-1], Jsonb(row[-1]) if row[-1] is not None else None) for row in batch.gpu])
                _copy(cur, LLM_COPY, LLM_TYPES, llm_rows)
                _copy(cur, CUSTOM_COPY, CUSTOM_TYPES, [(*row[:-1], Jsonb(row[-1])) for row in batch.custom])
                for source, minutes in batch.minutes.items():
                    if minutes:
                        cur.execute(_PENDING_SQL, (source, sorted(minutes)), prepare=True)
                _latest_readings(cur, agent_id=agent_id, host=batch.host, gpu=batch.gpu)
    except psycopg.errors.CheckViolation as exc:
        # "no partition of relation ... found for row": the beat job that makes partitions
        # ahead has not run (a new install, a long outage). Make them and try once more.
        if retried or "partition" not in str(exc):
            raise
        partitions.partitions_ensure()
        _write(agent_id=agent_id, batch=batch, llm_rows=llm_rows, retried=True)


def _copy(cur, sql: str, types: list[str], rows: list[tuple]) -> None:
    if not rows:
        return
    with cur.copy(sql) as copy:
        copy.set_types(types)
        for row in rows:
            copy.write_row(row)


_READINGS_SQL = """
UPDATE agents_agent SET readings = COALESCE(readings, '{}'::jsonb) || %s::jsonb WHERE id = %s
"""


def _latest_readings(cur, *, agent_id, host: list[tuple], gpu: list[tuple]) -> None:
    """The agent's row shows its latest host and GPU readings, whichever way they came.

    A device's fields merge into what the row already had, so a sample that omits some
    (clocks, ECC) does not blank them; `ts` is the newest sample's time.
    """
    if not host and not gpu:
        return
    readings: dict = {}
    newest = max([row[1] for row in host] + [row[1] for row in gpu])
    if host:
        latest = max(host, key=lambda row: row[1])
        names = [HOST_RENAMED_BACK.get(c, c) for c in HOST_COLUMNS]
        readings.update({name: value for name, value in zip(names, latest[2:]) if value is not None})
    readings["ts"] = newest.isoformat()
    if gpu:
        by_index: dict[int, tuple] = {}
        for row in gpu:
            if row[2] not in by_index or row[1] >= by_index[row[2]][1]:
                by_index[row[2]] = row
        cur.execute("SELECT readings->'gpus' FROM agents_agent WHERE id = %s", (agent_id,), prepare=True)
        found = cur.fetchone()
        previous = found[0] if found else None
        if isinstance(previous, str):  # psycopg parses jsonb unless Django's loader is on this connection
            previous = json.loads(previous)
        before = {g.get("index"): g for g in (previous or []) if isinstance(g, dict)}
        merged = dict(before)
        for index, row in by_index.items():
            fresh = {c: v for c, v in zip(GPU_COLUMNS, row[3:-1]) if v is not None}
            merged[index] = {**before.get(index, {}), "index": index, **fresh}
        readings["gpus"] = [merged[i] for i in sorted(merged)]
    cur.execute(_READINGS_SQL, (Jsonb(readings), agent_id), prepare=True)
    from apps.agents import events

    events.agents_changed([agent_id])


HOST_RENAMED_BACK = {column: name for name, column in HOST_RENAMED.items()}


def heartbeat_samples_sql() -> str:
    """CTEs for the heartbeat statement (apps.agents.services): the readings an accepted
    heartbeat carries become a host sample and one GPU sample per device, and the minute
    is marked for the rollup job, inside that one statement.

    Expects the statement's `v` (id, readings) and `upd` (accepted ids) and %(now)s.
    """
    host_cols = ", ".join(HOST_COLUMNS)
    host_vals = ", ".join(
        f"(v.readings->>'{HOST_RENAMED_BACK.get(c, c)}')::{HOST_COLUMNS[c]}" for c in HOST_COLUMNS
    )
    gpu_cols = ", ".join(GPU_COLUMNS)
    gpu_vals = ", ".join(f"(g->>'{c}')::{GPU_COLUMNS[c]}" for c in GPU_COLUMNS)
    accepted = "FROM v JOIN upd ON upd.id = v.id WHERE v.readings IS NOT NULL"
    return f"""
, host_samples AS (
    INSERT INTO metrics_host_sample (agent_id, ts, {host_cols})
    SELECT v.id, %(now)s, {host_vals} {accepted}
), gpu_samples AS (
    INSERT INTO metrics_gpu_sample (agent_id, ts, gpu_index, {gpu_cols})
    SELECT v.id, %(now)s, (g->>'index')::smallint, {gpu_vals}
    FROM v JOIN upd ON upd.id = v.id, jsonb_array_elements(COALESCE(v.readings->'gpus', '[]'::jsonb)) AS g
    WHERE v.readings IS NOT NULL
), pending_minutes AS (
    INSERT INTO metrics_rollup_pending (source, minute)
    SELECT source, date_trunc('minute', %(now)s::timestamptz) FROM unnest(ARRAY['host', 'gpu']) AS source
    WHERE EXISTS (SELECT 1 {accepted})
    ON CONFLICT DO NOTHING
)"""


def metrics_rollup(*, max_minutes: int = 720) -> dict[str, int]:
    """Roll up the minutes that got samples since the last run (see rollups.py)."""
    return rollups.rollup_pending(max_minutes=max_minutes)


def metrics_partitions_maintain() -> dict[str, list[str]]:
    """Create partitions ahead and drop the expired ones."""
    return {"created": partitions.partitions_ensure(), "dropped": partitions.partitions_drop_expired()}


def utc_minute(ts: datetime) -> datetime:
    return ts.astimezone(dt_timezone.utc).replace(second=0, microsecond=0)
