"""What the dashboard's telemetry pages read: the live feed of an agent's latest
readings, current figures for fleet rows, the fleet's GPUs, LLM usage for a window.

Thin over apps.metrics.selectors, the only place that knows the sample tables.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime

from django.utils import timezone

from apps.agents.choices import AgentStatus
from apps.dashboard.charts import Window
from apps.metrics import catalog
from apps.metrics import selectors as metrics

# --- the live feed: an agent's latest readings, keyed like the chart series ----------------

_HOST_READINGS = [(m.name, m.name.removeprefix("host.")) for m in catalog.METRICS.values() if m.source == catalog.HOST]
_GPU_READINGS = [(m.name, m.column) for m in catalog.METRICS.values() if m.source == catalog.GPU]


def _number(value):
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def readings_time(agent) -> datetime | None:
    readings = agent.readings or {}
    if readings.get("ts"):
        try:
            return datetime.fromisoformat(readings["ts"])
        except (TypeError, ValueError):
            pass
    return agent.last_heartbeat_at


def agent_feed(agent) -> dict:
    """{"ts": unix seconds, "values": {"host.cpu_percent": 41.5, "DCGM_FI_DEV_GPU_UTIL/0": 90, ...}}."""
    readings = agent.readings or {}
    values = {}
    for name, key in _HOST_READINGS:
        if (v := _number(readings.get(key))) is not None:
            values[name] = v
    for gpu in readings.get("gpus") or []:
        index = gpu.get("index")
        if not isinstance(index, int):
            continue
        for name, key in _GPU_READINGS:
            if (v := _number(gpu.get(key))) is not None:
                values[f"{name}/{index}"] = v
    ts = readings_time(agent)
    return {"ts": int(ts.timestamp()) if ts else None, "values": values}


def feed_attrs(feed: dict) -> dict:
    return {"ts": feed["ts"] or "", "values": json.dumps(feed["values"], separators=(",", ":"))}


# --- current figures on fleet rows ---------------------------------------------------------


def gpu_average(readings: dict | None) -> float | None:
    utils = [_number(g.get("utilization_percent")) for g in (readings or {}).get("gpus") or []]
    utils = [u for u in utils if u is not None]
    return sum(utils) / len(utils) if utils else None


def agents_with_telemetry(agents) -> list:
    """Attach `gpu_util` (average over devices) and `tokens_per_minute`: one query for all."""
    agents = list(agents)
    per_minute = metrics.tokens_per_minute(agent_ids=[a.pk for a in agents])
    for agent in agents:
        agent.gpu_util = gpu_average(agent.readings)
        agent.tokens_per_minute = per_minute.get(str(agent.pk))
    return agents


# --- the agent's GPU tab -------------------------------------------------------------------


@dataclass
class GpuRow:
    index: int
    name: str
    uuid: str
    memory_total_bytes: int | None
    reading: dict
    processes: list = field(default_factory=list)

    @property
    def memory_percent(self) -> float | None:
        used, total = self.reading.get("memory_used_bytes"), self.memory_total_bytes or self.reading.get("memory_total_bytes")
        return 100.0 * used / total if used is not None and total else None

    @property
    def memory_total(self):
        return self.memory_total_bytes or self.reading.get("memory_total_bytes")


def agent_gpu_rows(agent, *, with_processes: bool = True) -> list[GpuRow]:
    readings = {g.get("index"): g for g in (agent.readings or {}).get("gpus") or []}
    processes = metrics.gpu_processes(agent_id=agent.pk) if with_processes and agent.gpus else {}
    return [
        GpuRow(index=g.get("index", 0), name=g.get("name", ""), uuid=g.get("uuid", ""),
               memory_total_bytes=g.get("memory_total_bytes"), reading=readings.get(g.get("index"), {}),
               processes=processes.get(g.get("index"), []))
        for g in agent.gpus
    ]


# --- the fleet GPU page --------------------------------------------------------------------

HOT_C = 80
WARM_C = 75
# Readings of these agents are the last they sent, not the present: shown, never averaged.
SILENT = {AgentStatus.STALE, AgentStatus.OFFLINE}


@dataclass
class GpuGroup:
    agent_id: str
    agent_name: str
    agent_status: str
    devices: list

    @property
    def model(self) -> str:
        names = {d.name for d in self.devices}
        return names.pop() if len(names) == 1 else f"{len(names)} models"


def gpu_groups(devices) -> list[GpuGroup]:
    groups: dict[str, GpuGroup] = {}
    for d in devices:
        group = groups.get(d.agent_id)
        if group is None:
            group = groups[d.agent_id] = GpuGroup(d.agent_id, d.agent_name, d.agent_status, [])
        group.devices.append(d)
    return list(groups.values())


@dataclass
class GpuSummary:
    devices: int = 0
    agents: int = 0
    reporting: int = 0
    util_avg: float | None = None
    memory_used: int = 0
    memory_total: int = 0
    power_w: float = 0.0
    hot: int = 0
    idle: int = 0
    temp_avg: float | None = None
    temp_max: float | None = None

    @property
    def memory_percent(self) -> float:
        return 100.0 * self.memory_used / self.memory_total if self.memory_total else 0.0


def gpu_summary(devices) -> GpuSummary:
    s = GpuSummary(devices=len(devices), agents=len({d.agent_id for d in devices}))
    utils, temps = [], []
    for d in devices:
        if d.agent_status in SILENT or not d.reading:
            continue
        s.reporting += 1
        r = d.reading
        if (u := _number(r.get("utilization_percent"))) is not None:
            utils.append(u)
            s.idle += u < 5
        if (t := _number(r.get("temperature_c"))) is not None:
            temps.append(t)
            s.hot += t >= HOT_C
        s.power_w += _number(r.get("power_w")) or 0
        total = d.memory_total_bytes or _number(r.get("memory_total_bytes"))
        if total and (used := _number(r.get("memory_used_bytes"))) is not None:
            s.memory_used += used
            s.memory_total += total
    s.util_avg = sum(utils) / len(utils) if utils else None
    s.temp_avg = sum(temps) / len(temps) if temps else None
    s.temp_max = max(temps) if temps else None
    return s


def fleet_gpu_feed(summary: GpuSummary) -> dict:
    """Points for the fleet charts, keyed as charts.js keys fleet series (metric[:agg])."""
    values = {}
    if summary.util_avg is not None:
        values["DCGM_FI_DEV_GPU_UTIL"] = round(summary.util_avg, 2)
    if summary.temp_avg is not None:
        values["DCGM_FI_DEV_GPU_TEMP"] = round(summary.temp_avg, 2)
        values["DCGM_FI_DEV_GPU_TEMP:max"] = summary.temp_max
    # Milliseconds: two frames in one second are two readings of the fleet, not a repeat.
    return {"ts": round(timezone.now().timestamp(), 3), "values": values}


# --- LLM usage -----------------------------------------------------------------------------


def llm_usage_page(*, window: Window) -> dict:
    """Totals and the four breakdowns for a window, plus the previous window's totals."""
    usage = {g: metrics.llm_usage(start=window.start, end=window.end, group_by=g) for g in metrics.USAGE_GROUPS}
    span = window.end - window.start
    previous = metrics.llm_usage(start=window.start - span, end=window.start, group_by="provider")["totals"]
    totals = usage["model"]["totals"]
    for group in usage.values():
        for row in group["groups"]:
            row["share"] = 100.0 * row["cost_usd"] / totals["cost_usd"] if totals["cost_usd"] else 0.0
            row["tokens"] = row["tokens_in"] + row["tokens_out"]
    for row in usage["model"]["groups"]:
        row["provider"], _, row["model"] = row["key"].partition("/")
    totals["tokens"] = totals["tokens_in"] + totals["tokens_out"]
    previous["tokens"] = previous["tokens_in"] + previous["tokens_out"]
    trends = {k: _change(totals[k], previous[k]) for k in ("cost_usd", "calls", "tokens")}
    trends["error_rate"] = _change(totals["error_rate"], previous["error_rate"])
    return {"totals": totals, "previous": previous, "trends": trends, **{g: usage[g]["groups"] for g in usage}}


def _change(now, before) -> float | None:
    """Percent change against the previous window; None where there is nothing to compare."""
    if not before:
        return None
    return 100.0 * (now - before) / before
