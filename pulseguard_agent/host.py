"""What this machine is (inventory, sent at registration) and how it is doing (readings).

Both return plain dicts in the shapes the agent API expects, so a caller can extend or
replace them before sending.
"""

from __future__ import annotations

import logging
import math
import os
import platform
import socket
import threading

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
