"""Reads of the metrics app: time series, LLM usage and cost, fleet GPUs, tokens/min.

`series_query` picks the coarsest stored resolution whose bucket divides the step
(1 hour, 1 minute, else raw), and for a whole-fleet series without filters reads the
fleet rows the rollup job keeps (one row per bucket), so a 30-day fleet chart reads
~720 rows however many agents there are. Rollups lag the raw rows by at most one rollup
run (PULSEGUARD_ROLLUP_EVERY seconds): the current minute is recomputed every run.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from datetime import timezone as dt_timezone

from django.conf import settings
from django.db import connection
from django.utils import timezone

from apps.agents.models import Agent
from apps.core.errors import ApplicationError
from apps.metrics import catalog
from apps.metrics.rollups import HIST
from apps.metrics.schema import FLEET_ID, LATENCY_EDGES_MS

NICE_STEPS = [10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400, 604800]
TARGET_POINTS = 360
MAX_POINTS = 11_000
MAX_SERIES = 200
AGGS = {"gauge": ("avg", "min", "max"), "sum": ("sum",)}


def step_for(start: datetime, end: datetime) -> int:
    """A round step giving at most ~TARGET_POINTS points over the range."""
    want = (end - start).total_seconds() / TARGET_POINTS
    return next((s for s in NICE_STEPS if s >= want), NICE_STEPS[-1])


@dataclass
class Series:
    agent: str | None
    agent_name: str
    device: int | None
    points: list[list]


@dataclass
class SeriesResult:
    metric: str
    unit: str
    agg: str
    step: int
    resolution: str
    start: datetime
    end: datetime
    series: list[Series] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {
            "metric": self.metric, "unit": self.unit, "agg": self.agg, "step": self.step,
            "resolution": self.resolution, "from": self.start.isoformat(), "to": self.end.isoformat(),
            "series": [s.__dict__ for s in self.series],
        }


def _resolution(step: int, start: datetime, source: str, now: datetime) -> str:
    if source == catalog.CUSTOM:
        return "raw"
    age_days = (now - start).total_seconds() / 86400
    if step % 3600 == 0:
        return "1h"
    if step % 60 == 0 and age_days <= settings.PULSEGUARD_RETENTION_MINUTE_DAYS:
        return "1m"
    if step % 60 == 0:
        return "1h"  # older than the minute rollups: the hour rows answer, coarser
    return "raw"


def _value_sql(metric: catalog.Metric, agg: str, resolution: str) -> str:
    c = metric.column
    if metric.source == catalog.LLM:
        if resolution == "raw":
            return {"calls": "count(*)", "errors": "count(*) FILTER (WHERE NOT ok)",
                    "latency_ms": "avg(latency_ms)"}.get(c, f"sum({c})")
        return "sum(latency_sum) / NULLIF(sum(latency_n), 0)" if c == "latency_ms" else f"sum({c})"
    if resolution == "raw":
        return f"{agg}({c})"
    if agg == "avg":
        return f"sum({c}_avg * n) / NULLIF(sum(n) FILTER (WHERE {c}_avg IS NOT NULL), 0)"
    return f"{agg}({c}_{agg})"


def _table(metric: catalog.Metric, resolution: str) -> tuple[str, str]:
    """(table, time column)."""
    if metric.source == catalog.CUSTOM:
        return "metrics_custom_sample", "ts"
    raw = {"host": "metrics_host_sample", "gpu": "metrics_gpu_sample", "llm": "metrics_llm_call"}[metric.source]
    if resolution == "raw":
        return raw, "ts"
    return f"metrics_{metric.source}_{resolution}", "bucket"


def _agents_selected(agent_ids, labels) -> list | None:
    """Agent ids the query is limited to, or None for the whole fleet."""
    if not agent_ids and not labels:
        return None
    qs = Agent.objects.all()
    if agent_ids:
        qs = qs.filter(pk__in=agent_ids)
    for key, value in (labels or {}).items():
        qs = qs.filter(labels__contains={key: value}) if value is not None else qs.filter(labels__has_key=key)
    return list(qs.values_list("pk", flat=True))


def series_query(
    *, metric: str, start: datetime | None = None, end: datetime | None = None, step: int | None = None,
    agg: str | None = None, agent_ids: list | None = None, labels: dict | None = None, group_by: str = "agent",
) -> SeriesResult:
    """Time buckets of one metric, per agent (and GPU), or for the fleet as one series.

    Raises ApplicationError (400) for an unknown metric or aggregation, a bad range, too
    many points or too many series.
    """
    m = catalog.metric_get(metric)
    if m is None:
        raise ApplicationError(f"Unknown metric {metric!r}; GET /api/v1/metrics/catalog lists them",
                               code="unknown_metric", fields={"metric": ["Unknown metric."]})
    now = timezone.now()
    end = end or now
    start = start or end - timedelta(hours=1)
    if start >= end:
        raise ApplicationError("from must be before to", code="invalid_range", fields={"from": ["Must be before to."]})
    agg = agg or AGGS[m.kind][0]
    if m.source == catalog.CUSTOM:
        allowed = ("avg", "min", "max", "sum")
    else:
        allowed = AGGS[m.kind] if m.column != "latency_ms" else ("avg",)
    if agg not in allowed:
        raise ApplicationError(f"{m.name} takes agg {', '.join(allowed)}", code="invalid_agg",
                               fields={"agg": [f"One of {', '.join(allowed)}."]})
    if m.column == "latency_ms":
        agg = "avg"
    step = step or step_for(start, end)
    if step < 1 or (end - start).total_seconds() / step > MAX_POINTS:
        raise ApplicationError(f"At most {MAX_POINTS} points per series: raise step", code="too_many_points",
                               fields={"step": ["Too small for this range."]})
    if group_by not in ("agent", "fleet"):
        raise ApplicationError("group_by is agent or fleet", code="invalid_group_by", fields={"group_by": ["agent or fleet."]})
    resolution = _resolution(step, start, m.source, now)
    table, tcol = _table(m, resolution)
    selected = _agents_selected(agent_ids, labels)
    if selected == []:
        return SeriesResult(m.name, m.unit, agg, step, resolution, start, end)

    where = [f"{tcol} >= %(lo)s", f"{tcol} < %(hi)s"]
    params: dict = {"lo": _floor(start, step), "hi": end, "step": step}
    if m.source == catalog.CUSTOM:
        where.append("name = %(name)s")
        params["name"] = m.column
    fleet_rows = resolution != "raw" and selected is None and group_by == "fleet"
    if fleet_rows:
        where.append(f"agent_id = '{FLEET_ID}'")
        if m.source == catalog.GPU:
            where.append("gpu_index = -1")
    else:
        if selected is not None:
            where.append("agent_id = ANY(%(agents)s)")
            params["agents"] = selected
        elif resolution != "raw":
            where.append(f"agent_id <> '{FLEET_ID}'")
            if m.source == catalog.GPU:
                where.append("gpu_index >= 0")
    keys = [] if group_by == "fleet" else (["agent_id", "gpu_index"] if m.source == catalog.GPU else ["agent_id"])
    select_keys = "".join(f"{k}, " for k in keys)
    sql = (
        f"SELECT {select_keys}date_bin(make_interval(secs => %(step)s), {tcol}, TIMESTAMPTZ '1970-01-01') AS b, "
        f"{_value_sql(m, agg, resolution)} AS v FROM {table} WHERE {' AND '.join(where)} "
        f"GROUP BY {select_keys}b ORDER BY {select_keys}b"
    )
    with connection.cursor() as cur:
        cur.execute(sql, params)
        rows = cur.fetchall()

    grouped: dict[tuple, dict] = {}
    for row in rows:
        grouped.setdefault(tuple(row[: len(keys)]), {})[row[len(keys)]] = row[len(keys) + 1]
    if len(grouped) > MAX_SERIES:
        raise ApplicationError(f"{len(grouped)} series: at most {MAX_SERIES}; filter agents or use group_by=fleet",
                               code="too_many_series")
    names = dict(Agent.objects.filter(pk__in=[k[0] for k in grouped if k]).values_list("pk", "name")) if keys else {}
    buckets = _buckets(params["lo"], end, step)
    result = SeriesResult(m.name, m.unit, agg, step, resolution, start, end)
    for key, values in sorted(grouped.items(), key=lambda kv: (names.get(kv[0][0], "") if kv[0] else "", kv[0][1:])):
        points = [[int(b.timestamp()), _num(values.get(b))] for b in buckets]
        if key:
            agent = key[0]
            result.series.append(Series(str(agent), names.get(agent, "?"), key[1] if len(key) > 1 else None, points))
        else:
            result.series.append(Series(None, "fleet", None, points))
    return result


def _num(v):
    if v is None:
        return None
    v = float(v)
    return round(v, 6) if math.isfinite(v) else None


def _floor(ts: datetime, step: int) -> datetime:
    epoch = int(ts.timestamp())
    return datetime.fromtimestamp(epoch - epoch % step, dt_timezone.utc)


def _buckets(lo: datetime, hi: datetime, step: int) -> list[datetime]:
    out, b, delta = [], lo, timedelta(seconds=step)
    while b < hi:
        out.append(b)
        b += delta
    return out


# --- LLM usage -----------------------------------------------------------------------------

USAGE_GROUPS = ("model", "provider", "agent", "day")


def _percentile(hist: list[int], q: float) -> float | None:
    """Estimate a percentile from the latency histogram (linear inside a bucket)."""
    total = sum(hist)
    if not total:
        return None
    rank = q * total
    seen = 0
    edges = [0, *LATENCY_EDGES_MS]
    for i, n in enumerate(hist):
        if n and seen + n >= rank:
            lo = edges[i]
            hi = edges[i + 1] if i + 1 < len(edges) else edges[-1] * 2
            return round(lo + (hi - lo) * (rank - seen) / n, 1)
        seen += n
    return float(edges[-1])


def llm_usage(
    *, start: datetime | None = None, end: datetime | None = None, group_by: str = "model",
    agent_ids: list | None = None, labels: dict | None = None, provider: str | None = None, model: str | None = None,
) -> dict:
    """Calls, errors, tokens, cost and latency percentiles, grouped, with totals.

    Read from the LLM rollups (1-minute while they are kept, else hourly): percentiles
    are estimated from their latency histograms, to within a bucket (schema.py).
    """
    if group_by not in USAGE_GROUPS:
        raise ApplicationError(f"group_by is one of {', '.join(USAGE_GROUPS)}", code="invalid_group_by",
                               fields={"group_by": [f"One of {', '.join(USAGE_GROUPS)}."]})
    now = timezone.now()
    end = end or now
    start = start or end - timedelta(days=1)
    if start >= end:
        raise ApplicationError("from must be before to", code="invalid_range", fields={"from": ["Must be before to."]})
    minute_ok = (now - start).days < settings.PULSEGUARD_RETENTION_MINUTE_DAYS
    exact_hours = start.minute == start.second == end.minute == end.second == 0
    table = "metrics_llm_1h" if (exact_hours and (end - start) >= timedelta(hours=6)) or not minute_ok else "metrics_llm_1m"
    selected = _agents_selected(agent_ids, labels)
    where = ["bucket >= %(lo)s", "bucket < %(hi)s"]
    params: dict = {"lo": start, "hi": end}
    if group_by != "agent" and selected is None:
        where.append(f"agent_id = '{FLEET_ID}'")
    else:
        where.append(f"agent_id <> '{FLEET_ID}'")
        if selected is not None:
            where.append("agent_id = ANY(%(agents)s)")
            params["agents"] = selected
    if provider:
        where.append("provider = %(provider)s")
        params["provider"] = provider
    if model:
        where.append("model = %(model)s")
        params["model"] = model
    key_sql = {"model": "provider || '/' || model", "provider": "provider", "agent": "agent_id::text",
               "day": "to_char(date_trunc('day', bucket AT TIME ZONE 'UTC'), 'YYYY-MM-DD')"}[group_by]
    sums = "sum(calls), sum(errors), sum(tokens_in), sum(tokens_out), sum(tokens_cached), sum(cost_usd), " \
           "sum(latency_sum), sum(latency_n), " + ", ".join(f"sum({h})" for h in HIST)
    sql = f"SELECT {key_sql} AS k, {sums} FROM {table} WHERE {' AND '.join(where)} GROUP BY k ORDER BY k"
    with connection.cursor() as cur:
        cur.execute(sql, params)
        rows = cur.fetchall()
    names = {}
    if group_by == "agent":
        names = {str(pk): name for pk, name in Agent.objects.filter(pk__in=[r[0] for r in rows]).values_list("pk", "name")}
    groups = [_usage_row(r[0], names.get(r[0], r[0]), r[1:]) for r in rows]
    if group_by != "day":
        groups.sort(key=lambda g: (-g["cost_usd"], -g["calls"]))
    columns = list(zip(*[r[1:] for r in rows])) or [[0]] * (8 + len(HIST))
    totals = _usage_row("total", "All", [sum(float(v or 0) for v in column) for column in columns])
    return {"from": start.isoformat(), "to": end.isoformat(), "group_by": group_by,
            "resolution": "1h" if table.endswith("1h") else "1m", "totals": totals, "groups": groups}


def _usage_row(key, label, values) -> dict:
    calls, errors, t_in, t_out, t_cached, cost, lat_sum, lat_n, *hist = values
    calls, errors = int(calls or 0), int(errors or 0)
    hist = [int(h or 0) for h in hist]
    return {
        "key": key, "label": label, "calls": calls, "errors": errors,
        "error_rate": round(errors / calls, 4) if calls else 0.0,
        "tokens_in": int(t_in or 0), "tokens_out": int(t_out or 0), "tokens_cached": int(t_cached or 0),
        "cost_usd": round(float(cost or 0), 6),
        "latency_avg_ms": round(float(lat_sum) / int(lat_n), 1) if lat_n else None,
        "latency_p50_ms": _percentile(hist, 0.50), "latency_p95_ms": _percentile(hist, 0.95),
    }


# --- current figures for the fleet pages -----------------------------------------------------

def tokens_per_minute(*, agent_ids, minutes: int = 5) -> dict[str, float]:
    """Tokens (in + out) per minute over the last few minutes, by agent id."""
    if not agent_ids:
        return {}
    since = _floor(timezone.now() - timedelta(minutes=minutes), 60)
    with connection.cursor() as cur:
        cur.execute(
            "SELECT agent_id::text, sum(tokens_in + tokens_out)::float8 / %s FROM metrics_llm_1m "
            "WHERE bucket >= %s AND agent_id = ANY(%s) GROUP BY agent_id",
            [minutes, since, [str(a) for a in agent_ids]],
        )
        return {row[0]: round(row[1], 1) for row in cur.fetchall()}


@dataclass
class GpuDevice:
    agent_id: str
    agent_name: str
    agent_status: str
    index: int
    name: str
    uuid: str
    memory_total_bytes: int | None
    reading: dict


def fleet_gpus(*, agent_ids=None) -> list[GpuDevice]:
    """Every GPU of the fleet with its latest reading (inventory from registration)."""
    qs = Agent.objects.filter(host__gpus__0__isnull=False).only("id", "name", "status", "host", "readings").order_by("name")
    if agent_ids is not None:
        qs = qs.filter(pk__in=agent_ids)
    devices = []
    for agent in qs:
        readings = {g.get("index"): g for g in (agent.readings or {}).get("gpus") or []}
        for gpu in agent.host.get("gpus") or []:
            devices.append(GpuDevice(
                agent_id=str(agent.pk), agent_name=agent.name, agent_status=agent.status, index=gpu.get("index", 0),
                name=gpu.get("name", ""), uuid=gpu.get("uuid", ""), memory_total_bytes=gpu.get("memory_total_bytes"),
                reading=readings.get(gpu.get("index"), {}),
            ))
    return devices


def gpu_processes(*, agent_id, minutes: int = 10) -> dict[int, list[dict]]:
    """The processes each GPU of an agent reported last (within a few minutes), by index."""
    since = timezone.now() - timedelta(minutes=minutes)
    with connection.cursor() as cur:
        cur.execute(
            "SELECT DISTINCT ON (gpu_index) gpu_index, processes FROM metrics_gpu_sample "
            "WHERE agent_id = %s AND ts >= %s AND processes IS NOT NULL ORDER BY gpu_index, ts DESC",
            [str(agent_id), since],
        )
        rows = cur.fetchall()
    out = {}
    for index, procs in rows:
        procs = json.loads(procs) if isinstance(procs, str) else procs  # Django's cursor leaves jsonb as text
        out[index] = sorted(procs or [], key=lambda p: -(p.get("used_memory_bytes") or 0))
    return out
