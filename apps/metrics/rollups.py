"""1-minute and 1-hour rollups, maintained incrementally and idempotently.

Ingest marks every minute that received samples (metrics_rollup_pending, in the same
transaction as the samples). A run takes the marked minutes, recomputes each of them
whole from the raw rows (so running twice, or a sample arriving late, gives the same
result as a single run after everything arrived), writes the fleet-wide row of each
minute (agent FLEET_ID), then recomputes the hours those minutes belong to from the
minute rows. Rows are upserted; nothing is ever added to a stored total.

Gauges keep avg, min and max per bucket; an average over several buckets is weighted by
sample count. LLM rollups keep sums (calls, errors, tokens, cost) and a latency
histogram (schema.LATENCY_EDGES_MS) from which p50/p95 over any range are estimated.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import structlog
from django.db import connection, transaction

from apps.metrics.schema import FLEET_ID, GPU_COLUMNS, HOST_COLUMNS, LATENCY_BUCKETS, LATENCY_EDGES_MS

log = structlog.get_logger(__name__)

HIST = [f"lat_h{i}" for i in range(LATENCY_BUCKETS)]
LLM_SUMS = ["calls", "errors", "tokens_in", "tokens_out", "tokens_cached", "cost_usd", "latency_sum", "latency_n", *HIST]


def _gauge_select(columns) -> str:
    return ", ".join(f"avg({c}), min({c}), max({c})" for c in columns)


def _gauge_names(columns) -> list[str]:
    return [f"{c}_{a}" for c in columns for a in ("avg", "min", "max")]


def _gauge_combine(columns) -> str:
    # Weighted by the sample counts of the buckets that had the column at all.
    return ", ".join(
        f"sum({c}_avg * n) / NULLIF(sum(n) FILTER (WHERE {c}_avg IS NOT NULL), 0), min({c}_min), max({c}_max)"
        for c in columns
    )


def _upsert(table: str, key: list[str], names: list[str]) -> str:
    sets = ", ".join(f"{c} = EXCLUDED.{c}" for c in names)
    return f"INSERT INTO {table} ({', '.join(key + names)}) {{select}} ON CONFLICT ({', '.join(key)}) DO UPDATE SET {sets}"


_HOST_NAMES = ["n", *_gauge_names(HOST_COLUMNS)]
_GPU_NAMES = ["n", *_gauge_names(GPU_COLUMNS)]

_WIDTH = f"width_bucket(latency_ms, ARRAY{LATENCY_EDGES_MS}::real[])"
_LLM_RAW_SELECT = ", ".join([
    "count(*)", "count(*) FILTER (WHERE NOT ok)", "sum(tokens_in)", "sum(tokens_out)", "sum(tokens_cached)",
    "COALESCE(sum(cost_usd), 0)", "COALESCE(sum(latency_ms), 0)", "count(latency_ms)",
    *[f"count(*) FILTER (WHERE {_WIDTH} = {i})" for i in range(LATENCY_BUCKETS)],
])
_LLM_SUM_SELECT = ", ".join(f"sum({c})" for c in LLM_SUMS)

# source -> (raw -> 1m, 1m per agent -> fleet 1m, 1m -> 1h), each taking %(lo)s and %(hi)s
STATEMENTS = {
    "host": (
        _upsert("metrics_host_1m", ["agent_id", "bucket"], _HOST_NAMES).format(select=(
            f"SELECT agent_id, date_trunc('minute', ts), count(*), {_gauge_select(HOST_COLUMNS)} "
            "FROM metrics_host_sample WHERE ts >= %(lo)s AND ts < %(hi)s GROUP BY 1, 2")),
        _upsert("metrics_host_1m", ["agent_id", "bucket"], _HOST_NAMES).format(select=(
            f"SELECT '{FLEET_ID}'::uuid, bucket, sum(n), {_gauge_combine(HOST_COLUMNS)} FROM metrics_host_1m "
            f"WHERE bucket >= %(lo)s AND bucket < %(hi)s AND agent_id <> '{FLEET_ID}' GROUP BY bucket")),
        _upsert("metrics_host_1h", ["agent_id", "bucket"], _HOST_NAMES).format(select=(
            f"SELECT agent_id, date_trunc('hour', bucket), sum(n), {_gauge_combine(HOST_COLUMNS)} FROM metrics_host_1m "
            "WHERE bucket >= %(lo)s AND bucket < %(hi)s GROUP BY 1, 2")),
    ),
    "gpu": (
        _upsert("metrics_gpu_1m", ["agent_id", "gpu_index", "bucket"], _GPU_NAMES).format(select=(
            f"SELECT agent_id, gpu_index, date_trunc('minute', ts), count(*), {_gauge_select(GPU_COLUMNS)} "
            "FROM metrics_gpu_sample WHERE ts >= %(lo)s AND ts < %(hi)s GROUP BY 1, 2, 3")),
        _upsert("metrics_gpu_1m", ["agent_id", "gpu_index", "bucket"], _GPU_NAMES).format(select=(
            f"SELECT '{FLEET_ID}'::uuid, -1, bucket, sum(n), {_gauge_combine(GPU_COLUMNS)} FROM metrics_gpu_1m "
            f"WHERE bucket >= %(lo)s AND bucket < %(hi)s AND agent_id <> '{FLEET_ID}' GROUP BY bucket")),
        _upsert("metrics_gpu_1h", ["agent_id", "gpu_index", "bucket"], _GPU_NAMES).format(select=(
            f"SELECT agent_id, gpu_index, date_trunc('hour', bucket), sum(n), {_gauge_combine(GPU_COLUMNS)} "
            "FROM metrics_gpu_1m WHERE bucket >= %(lo)s AND bucket < %(hi)s GROUP BY 1, 2, 3")),
    ),
    "llm": (
        _upsert("metrics_llm_1m", ["agent_id", "bucket", "provider", "model"], LLM_SUMS).format(select=(
            f"SELECT agent_id, date_trunc('minute', ts), provider, model, {_LLM_RAW_SELECT} "
            "FROM metrics_llm_call WHERE ts >= %(lo)s AND ts < %(hi)s GROUP BY 1, 2, 3, 4")),
        _upsert("metrics_llm_1m", ["agent_id", "bucket", "provider", "model"], LLM_SUMS).format(select=(
            f"SELECT '{FLEET_ID}'::uuid, bucket, provider, model, {_LLM_SUM_SELECT} FROM metrics_llm_1m "
            f"WHERE bucket >= %(lo)s AND bucket < %(hi)s AND agent_id <> '{FLEET_ID}' GROUP BY 2, 3, 4")),
        _upsert("metrics_llm_1h", ["agent_id", "bucket", "provider", "model"], LLM_SUMS).format(select=(
            f"SELECT agent_id, date_trunc('hour', bucket), provider, model, {_LLM_SUM_SELECT} FROM metrics_llm_1m "
            "WHERE bucket >= %(lo)s AND bucket < %(hi)s GROUP BY 1, 2, 3, 4")),
    ),
}

_CLAIM_SQL = """
DELETE FROM metrics_rollup_pending p USING (
    SELECT source, minute FROM metrics_rollup_pending WHERE source = %s ORDER BY minute LIMIT %s FOR UPDATE SKIP LOCKED
) c WHERE p.source = c.source AND p.minute = c.minute
RETURNING p.minute
"""


def _runs(minutes: list[datetime]) -> list[tuple[datetime, datetime]]:
    """Contiguous runs of minutes as [lo, hi) ranges, so each query scans only its rows."""
    runs: list[list[datetime]] = []
    one = timedelta(minutes=1)
    for m in sorted(minutes):
        if runs and m - runs[-1][1] <= one:
            runs[-1][1] = m
        else:
            runs.append([m, m])
    return [(lo, hi + one) for lo, hi in runs]


def rollup_source(source: str, *, max_minutes: int = 720) -> int:
    """Roll up up to `max_minutes` marked minutes of one source; returns how many."""
    raw_to_1m, fleet_1m, to_1h = STATEMENTS[source]
    with transaction.atomic(), connection.cursor() as cur:
        # One run at a time: two runs recomputing the same hour from each other's
        # uncommitted minutes would leave it short.
        cur.execute("SELECT pg_advisory_xact_lock(hashtext('pulseguard.metrics.rollup'))")
        cur.execute(_CLAIM_SQL, [source, max_minutes])
        minutes = [row[0] for row in cur.fetchall()]
        if not minutes:
            return 0
        hours = set()
        for lo, hi in _runs(minutes):
            cur.execute(raw_to_1m, {"lo": lo, "hi": hi})
            cur.execute(fleet_1m, {"lo": lo, "hi": hi})
            hours.update(_hours(lo, hi))
        for hour in sorted(hours):
            cur.execute(to_1h, {"lo": hour, "hi": hour + timedelta(hours=1)})
    return len(minutes)


def _hours(lo: datetime, hi: datetime):
    h = lo.replace(minute=0, second=0, microsecond=0)
    while h < hi:
        yield h
        h += timedelta(hours=1)


def rollup_pending(*, max_minutes: int = 720) -> dict[str, int]:
    """Roll up every source until nothing is pending (bounded per transaction)."""
    done = {}
    for source in STATEMENTS:
        total = 0
        while True:
            n = rollup_source(source, max_minutes=max_minutes)
            total += n
            if n < max_minutes:
                break
        done[source] = total
    if any(done.values()):
        log.info("metrics_rolled_up", **done)
    return done
