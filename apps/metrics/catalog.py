"""Every metric PulseGuard stores: its name, where it lives, its unit, how it rolls up.

Names are what the query API, the charts and (later) the Prometheus exporter use. GPU
metrics are named after NVIDIA's DCGM fields (DCGM_FI_DEV_GPU_UTIL, ...) so people who
know dcgm-exporter and its Grafana boards recognise them; units are ours (bytes, not
MiB) and are given with every answer.

Each metric is one column of a wide sample table: a host reading, a GPU reading or an
LLM call is one row, so a sample in a batch is one row written by COPY.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Metric:
    name: str
    source: str  # "host" | "gpu" | "llm"
    column: str
    unit: str
    description: str
    # How a bucket combines samples: "gauge" (avg/min/max/last), "sum" (tokens, cost, calls)
    kind: str = "gauge"


HOST = "host"
GPU = "gpu"
LLM = "llm"
CUSTOM = "custom"

_METRICS = [
    # host
    Metric("host.cpu_percent", HOST, "cpu_percent", "percent", "CPU busy, all cores"),
    Metric("host.load1", HOST, "load1", "", "1-minute load average"),
    Metric("host.load5", HOST, "load5", "", "5-minute load average"),
    Metric("host.load15", HOST, "load15", "", "15-minute load average"),
    Metric("host.memory_used_bytes", HOST, "memory_used_bytes", "bytes", "Memory in use"),
    Metric("host.memory_total_bytes", HOST, "memory_total_bytes", "bytes", "Memory installed"),
    Metric("host.disk_used_bytes", HOST, "disk_used_bytes", "bytes", "Disk space in use"),
    Metric("host.disk_total_bytes", HOST, "disk_total_bytes", "bytes", "Disk space"),
    Metric("host.disk_read_bytes_per_s", HOST, "disk_read_bps", "bytes/s", "Disk reads"),
    Metric("host.disk_write_bytes_per_s", HOST, "disk_write_bps", "bytes/s", "Disk writes"),
    Metric("host.net_rx_bytes_per_s", HOST, "net_rx_bps", "bytes/s", "Network received"),
    Metric("host.net_tx_bytes_per_s", HOST, "net_tx_bps", "bytes/s", "Network sent"),
    # gpu, per device (DCGM field names)
    Metric("DCGM_FI_DEV_GPU_UTIL", GPU, "utilization_percent", "percent", "GPU utilization"),
    Metric("DCGM_FI_DEV_MEM_COPY_UTIL", GPU, "memory_util_percent", "percent", "Memory bandwidth utilization"),
    Metric("DCGM_FI_DEV_FB_USED", GPU, "memory_used_bytes", "bytes", "Framebuffer memory used"),
    Metric("DCGM_FI_DEV_FB_FREE", GPU, "memory_free_bytes", "bytes", "Framebuffer memory free"),
    Metric("DCGM_FI_DEV_FB_TOTAL", GPU, "memory_total_bytes", "bytes", "Framebuffer memory total"),
    Metric("DCGM_FI_DEV_GPU_TEMP", GPU, "temperature_c", "celsius", "GPU temperature"),
    Metric("DCGM_FI_DEV_POWER_USAGE", GPU, "power_w", "watts", "Power draw"),
    Metric("DCGM_FI_DEV_POWER_MGMT_LIMIT", GPU, "power_limit_w", "watts", "Power limit"),
    Metric("DCGM_FI_DEV_SM_CLOCK", GPU, "sm_clock_mhz", "MHz", "SM clock"),
    Metric("DCGM_FI_DEV_MEM_CLOCK", GPU, "mem_clock_mhz", "MHz", "Memory clock"),
    Metric("DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION", GPU, "energy_mj", "millijoules", "Energy since driver load (counter)"),
    Metric("DCGM_FI_DEV_ECC_SBE_VOL_TOTAL", GPU, "ecc_sbe_total", "errors", "Single-bit ECC errors (volatile)"),
    Metric("DCGM_FI_DEV_ECC_DBE_VOL_TOTAL", GPU, "ecc_dbe_total", "errors", "Double-bit ECC errors (volatile)"),
    Metric("DCGM_FI_DEV_XID_ERRORS", GPU, "xid_errors", "errors", "XID errors seen"),
    # llm, per call; bucketed as sums (rates are sums over the step)
    Metric("llm.calls", LLM, "calls", "calls", "LLM calls", "sum"),
    Metric("llm.errors", LLM, "errors", "calls", "LLM calls that failed", "sum"),
    Metric("llm.tokens_in", LLM, "tokens_in", "tokens", "Prompt tokens", "sum"),
    Metric("llm.tokens_out", LLM, "tokens_out", "tokens", "Completion tokens", "sum"),
    Metric("llm.tokens_cached", LLM, "tokens_cached", "tokens", "Prompt tokens served from cache", "sum"),
    Metric("llm.cost_usd", LLM, "cost_usd", "USD", "Cost", "sum"),
    Metric("llm.latency_ms", LLM, "latency_ms", "ms", "Call latency (mean per bucket)"),
]

METRICS: dict[str, Metric] = {m.name: m for m in _METRICS}
# Short lowercase aliases for the GPU names (gpu.utilization_percent, ...).
ALIASES: dict[str, str] = {f"gpu.{m.column}": m.name for m in _METRICS if m.source == GPU}

HOST_COLUMNS = [m.column for m in _METRICS if m.source == HOST]
GPU_COLUMNS = [m.column for m in _METRICS if m.source == GPU]

CUSTOM_PREFIX = "custom."


def metric_get(name: str) -> Metric | None:
    """The catalog entry for a name or alias; custom.<name> gives a synthetic entry."""
    name = ALIASES.get(name, name)
    if name in METRICS:
        return METRICS[name]
    if name.startswith(CUSTOM_PREFIX) and len(name) > len(CUSTOM_PREFIX):
        return Metric(name, CUSTOM, name[len(CUSTOM_PREFIX):], "", "Custom metric reported by agents")
    return None
