"""Charts of the telemetry pages: time ranges, their windows and steps, and what each
chart draws (query URLs of the metrics API, read by static/js/charts.js)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from urllib.parse import urlencode

from django.urls import reverse
from django.utils import timezone

# --- time ranges -------------------------------------------------------------------------


@dataclass(frozen=True)
class TimeRange:
    key: str
    label: str
    seconds: int
    step: int  # gauges (CPU, GPU): one point per step
    sum_step: int  # sums (tokens, cost): one bar per sum_step

    @property
    def sum_label(self) -> str:
        return {60: "minute", 600: "10 min", 3600: "hour", 21600: "6 h", 86400: "day"}.get(self.sum_step, f"{self.sum_step} s")


# Steps chosen so each chart reads the coarsest rollup that still draws ~60–360 points.
RANGES = {
    r.key: r
    for r in [
        TimeRange("1h", "1 h", 3600, 60, 60),
        TimeRange("6h", "6 h", 6 * 3600, 120, 600),
        TimeRange("24h", "24 h", 86400, 600, 3600),
        TimeRange("7d", "7 d", 7 * 86400, 3600, 21600),
        TimeRange("30d", "30 d", 30 * 86400, 10800, 86400),
    ]
}
AGENT_RANGES = ["1h", "6h", "24h", "7d", "30d"]
GPU_RANGES = ["1h", "6h", "24h", "7d"]
LLM_RANGES = ["24h", "7d", "30d"]


def range_get(key: str | None, *, allowed: list[str], default: str) -> TimeRange:
    return RANGES[key if key in allowed else default]


@dataclass(frozen=True)
class Window:
    range: TimeRange
    start: datetime
    end: datetime


def window_for(time_range: TimeRange, *, now: datetime | None = None, whole_hours: bool = False) -> Window:
    """The range ending now; with whole_hours, ending at the next full hour, so usage
    totals read the hourly rollups (the current hour included) instead of minute rows."""
    end = now or timezone.now()
    if whole_hours:
        end = end.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    return Window(time_range, end - timedelta(seconds=time_range.seconds), end)


# --- charts --------------------------------------------------------------------------------


def query_url(metric: str, *, window: Window, step: int, agent_id=None, group_by: str = "agent", agg: str | None = None) -> str:
    params = {"metric": metric, "from": window.start.isoformat(), "to": window.end.isoformat(), "step": step}
    if agent_id is not None:
        params["agent"] = str(agent_id)
    if group_by != "agent":
        params["group_by"] = group_by
    if agg:
        params["agg"] = agg
    return f"{reverse('metrics-api:query')}?{urlencode(params)}"


@dataclass
class Chart:
    """One chart for static/js/charts.js: its sources are drawn together."""

    id: str
    title: str
    unit: str
    sources: list[str]
    labels: list[str] = field(default_factory=list)  # one per source; "~" marks a reference line
    style: str = "line"  # or "bars"
    refresh: int = 0  # seconds; 0: only live points
    empty: str = "No data in this range yet."

    @property
    def src(self) -> str:
        return " ".join(self.sources)

    @property
    def label_attr(self) -> str:
        return "|".join(self.labels)


def agent_charts(tab: str, *, agent_id, window: Window) -> list[Chart]:
    r = window.range

    def q(metric, *, sums=False, agg=None):
        return query_url(metric, window=window, step=r.sum_step if sums else r.step, agent_id=agent_id, agg=agg)

    if tab == "system":
        return [
            Chart("cpu", "CPU busy", "percent", [q("host.cpu_percent")]),
            Chart("load", "Load average", "", [q("host.load1"), q("host.load5"), q("host.load15")], ["1 min", "5 min", "15 min"]),
            Chart("memory", "Memory", "bytes", [q("host.memory_used_bytes"), q("host.memory_total_bytes")], ["Used", "Installed~"]),
            Chart("disk-io", "Disk I/O", "bytes/s", [q("host.disk_read_bytes_per_s"), q("host.disk_write_bytes_per_s")], ["Read", "Write"]),
            Chart("net-io", "Network", "bytes/s", [q("host.net_rx_bytes_per_s"), q("host.net_tx_bytes_per_s")], ["Received", "Sent"]),
        ]
    if tab == "gpu":
        empty = "No GPU samples in this range yet."
        return [
            Chart("gpu-util", "GPU utilization", "percent", [q("DCGM_FI_DEV_GPU_UTIL")], empty=empty),
            Chart("gpu-mem", "GPU memory used", "bytes", [q("DCGM_FI_DEV_FB_USED")], empty=empty),
            Chart("gpu-temp", "Temperature", "celsius", [q("DCGM_FI_DEV_GPU_TEMP")], empty=empty),
            Chart("gpu-power", "Power draw", "watts", [q("DCGM_FI_DEV_POWER_USAGE")], empty=empty),
        ]
    if tab == "llm":
        per = f"per {r.sum_label}"
        empty = "No LLM calls in this range. Calls reported with the SDK's track_llm() appear here."
        return [
            Chart("llm-tokens", f"Tokens {per}", "tokens", [q("llm.tokens_in", sums=True), q("llm.tokens_out", sums=True)],
                  ["In", "Out"], refresh=60, empty=empty),
            Chart("llm-calls", f"Calls and errors {per}", "calls", [q("llm.calls", sums=True), q("llm.errors", sums=True)],
                  ["Calls", "Errors"], refresh=60, empty=empty),
            Chart("llm-latency", "Average latency", "ms", [q("llm.latency_ms", sums=True)], refresh=60, empty=empty),
            Chart("llm-cost", f"Cost {per}", "USD", [q("llm.cost_usd", sums=True)], style="bars", refresh=60, empty=empty),
        ]
    return []


def fleet_gpu_charts(*, window: Window) -> list[Chart]:
    step = window.range.step
    empty = "No GPU samples in this range yet."

    def q(metric, agg=None):
        return query_url(metric, window=window, step=step, group_by="fleet", agg=agg)

    return [
        Chart("fleet-gpu-util", "Fleet GPU utilization", "percent", [q("DCGM_FI_DEV_GPU_UTIL")], ["Average"], empty=empty),
        Chart("fleet-gpu-temp", "Fleet GPU temperature", "celsius", [q("DCGM_FI_DEV_GPU_TEMP"), q("DCGM_FI_DEV_GPU_TEMP", "max")],
              ["Average", "Hottest"], empty=empty),
    ]


def llm_charts(*, window: Window) -> list[Chart]:
    step = window.range.sum_step
    per = f"per {window.range.sum_label}"
    empty = "No LLM calls in this range."

    def q(metric):
        return query_url(metric, window=window, step=step, group_by="fleet")

    return [
        Chart("cost-trend", f"Cost {per}", "USD", [q("llm.cost_usd")], style="bars", refresh=60, empty=empty),
        Chart("token-trend", f"Tokens {per}", "tokens", [q("llm.tokens_in"), q("llm.tokens_out")], ["In", "Out"], refresh=60, empty=empty),
        Chart("call-trend", f"Calls and errors {per}", "calls", [q("llm.calls"), q("llm.errors")], ["Calls", "Errors"], refresh=60, empty=empty),
        Chart("latency-trend", "Average latency", "ms", [q("llm.latency_ms")], refresh=60, empty=empty),
    ]
