"""What this machine is (inventory, sent at registration) and how it is doing (readings).

All return plain dicts in the shapes the agent API expects, so a caller can extend or
replace them before sending: `host_readings()` for the heartbeat, `HostSampler` for the
fuller `kind: host` telemetry sample (docs/telemetry.md).
"""

from __future__ import annotations

import logging
import math
import os
import platform
import socket
import threading
import time
from collections.abc import Callable

import psutil

from pulseguard_agent.gpu import gpu_inventory, gpu_readings

log = logging.getLogger(__name__)

_cpu_lock = threading.Lock()
_cpu_primed = False


def host_inventory() -> dict:
    """hostname, os, cpu_count, memory_total_bytes and gpus of this machine."""
    _prime_cpu_percent()
    return {
        "hostname": socket.gethostname()[:255],
        "os": platform.platform()[:120],
        "cpu_count": psutil.cpu_count(logical=True) or os.cpu_count() or 0,
        "memory_total_bytes": int(psutil.virtual_memory().total),
        "gpus": gpu_inventory(),
    }


def host_readings(include_gpus: bool = True) -> dict:
    """cpu_percent, load1, memory used/total (and per-GPU readings) right now.

    cpu_percent is the average since the previous call, without blocking: the first
    call in a process has nothing to compare with and reports no CPU figure rather than
    a misleading 0.
    """
    readings: dict = {}
    cpu = _cpu_percent()
    if cpu is not None:
        readings["cpu_percent"] = cpu
    load1 = _load1()
    if load1 is not None:
        readings["load1"] = load1
    memory = psutil.virtual_memory()
    # total - available is what programs cannot get back; "used" omits caches oddly per OS.
    readings["memory_used_bytes"] = max(int(memory.total - memory.available), 0)
    readings["memory_total_bytes"] = int(memory.total)
    if include_gpus:
        gpus = gpu_readings()
        if gpus:
            readings["gpus"] = gpus
    return readings


class HostSampler:
    """`kind: host` telemetry samples: CPU, load, memory, the disk of `disk_path`, I/O rates.

    CPU and the disk and network rates are averages since this sampler's previous sample
    (from counter deltas), so the first sample has none of them: there is nothing to
    compare with, and 0 would be a lie. It keeps its own CPU window, apart from the
    heartbeat's, so the two schedules do not shorten each other's. A counter that went
    backwards (a NIC reset, a counter wrap) gives no rate for that interval.
    """

    def __init__(self, disk_path: str = "/", *, clock: Callable[[], float] = time.monotonic):
        self.disk_path = disk_path
        self._clock = clock
        self._previous: tuple[float, dict[str, float]] | None = None

    def sample(self) -> dict:
        """The next host sample (with `kind` and `ts`); figures this OS does not give are left out."""
        sample: dict = {"kind": "host", "ts": round(time.time(), 3)}
        try:
            load = psutil.getloadavg()
            sample.update(load1=round(load[0], 3), load5=round(load[1], 3), load15=round(load[2], 3))
        except (OSError, AttributeError) as exc:
            log.debug("load average unavailable: %s", exc)
        memory = psutil.virtual_memory()
        sample["memory_used_bytes"] = max(int(memory.total - memory.available), 0)
        sample["memory_total_bytes"] = int(memory.total)
        try:
            disk = psutil.disk_usage(self.disk_path)
            sample.update(disk_used_bytes=int(disk.used), disk_total_bytes=int(disk.total))
        except OSError as exc:
            log.debug("disk usage of %s unavailable: %s", self.disk_path, exc)
        now, counters = self._clock(), _counters()
        if self._previous is not None:
            then, before = self._previous
            sample.update(_rates(before, counters, now - then))
        self._previous = (now, counters)
        return sample


_RATE_FIELDS = {"disk_read": "disk_read_bytes_per_s", "disk_write": "disk_write_bytes_per_s",
                "net_rx": "net_rx_bytes_per_s", "net_tx": "net_tx_bytes_per_s"}


def _counters() -> dict[str, float]:
    """Cumulative CPU times and I/O byte counters, where this machine has them."""
    counters: dict[str, float] = {}
    cpu = psutil.cpu_times()
    # iowait is time the CPU had nothing to run, as psutil's own cpu_percent counts it.
    idle = cpu.idle + getattr(cpu, "iowait", 0.0)
    # On Linux guest time is already counted in user time (psutil's cpu_percent subtracts it too).
    total = sum(cpu) - getattr(cpu, "guest", 0.0) - getattr(cpu, "guest_nice", 0.0)
    counters["cpu_idle"], counters["cpu_total"] = idle, total
    try:
        disk = psutil.disk_io_counters()
    except (OSError, RuntimeError) as exc:  # containers without /proc/diskstats
        log.debug("disk counters unavailable: %s", exc)
        disk = None
    if disk is not None:
        counters["disk_read"], counters["disk_write"] = disk.read_bytes, disk.write_bytes
    try:
        net = psutil.net_io_counters()
    except OSError as exc:
        log.debug("network counters unavailable: %s", exc)
        net = None
    if net is not None:
        counters["net_rx"], counters["net_tx"] = net.bytes_recv, net.bytes_sent
    return counters


def _rates(before: dict[str, float], after: dict[str, float], elapsed: float) -> dict:
    rates: dict = {}
    total = after["cpu_total"] - before["cpu_total"]
    busy = total - (after["cpu_idle"] - before["cpu_idle"])
    if total > 0:
        rates["cpu_percent"] = round(min(max(busy / total * 100.0, 0.0), 100.0), 2)
    if elapsed <= 0:
        return rates
    for key, field in _RATE_FIELDS.items():
        if key in before and key in after and after[key] >= before[key]:
            rates[field] = round((after[key] - before[key]) / elapsed, 1)
    return rates


def finite_readings(readings: dict) -> dict:
    """`readings` without NaN or infinite figures, which JSON cannot carry and the server refuses."""

    def keep(value: object) -> bool:
        return not isinstance(value, float) or math.isfinite(value)

    clean = {key: value for key, value in readings.items() if keep(value)}
    if isinstance(clean.get("gpus"), list):
        clean["gpus"] = [{k: v for k, v in gpu.items() if keep(v)} for gpu in clean["gpus"] if isinstance(gpu, dict)]
    return clean


def _prime_cpu_percent() -> bool:
    """Start psutil's CPU sampling window; True if it had already been started."""
    global _cpu_primed
    with _cpu_lock:
        was_primed = _cpu_primed
        if not was_primed:
            psutil.cpu_percent(interval=None)
            _cpu_primed = True
        return was_primed


def _cpu_percent() -> float | None:
    if not _prime_cpu_percent():
        return None
    return min(max(float(psutil.cpu_percent(interval=None)), 0.0), 100.0)


def _load1() -> float | None:
    try:
        return round(float(psutil.getloadavg()[0]), 3)
    except (OSError, AttributeError) as exc:
        log.debug("load average unavailable: %s", exc)
        return None
