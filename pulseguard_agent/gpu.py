"""NVIDIA GPUs through NVML: the SDK's one seam for GPUs.

pynvml is imported lazily and NVML initialised once per process. On a machine without
the library or a driver (most CPU hosts) every function returns [] and never raises:
an agent must keep heartbeating whatever the GPU stack is doing. Each field is read on
its own: one a device does not support (power on some boards, temperature in some VMs,
ECC on consumer cards), or a query an older pynvml lacks, is left out, not fatal.

Three views: `gpu_inventory()` at registration, `gpu_readings()` for the heartbeat (its
fields only: the heartbeat API refuses others), `gpu_samples()` for telemetry (every
field of a `kind: gpu` sample in docs/telemetry.md).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import psutil

log = logging.getLogger(__name__)

_lock = threading.Lock()
_nvml: Any = None  # the pynvml module once NVML is initialised
_tried = False


def _library() -> Any:
    """The initialised pynvml module, or None when NVML cannot be used here (cached)."""
    global _nvml, _tried
    with _lock:
        if _tried:
            return _nvml
        _tried = True
        try:
            import pynvml
        except ImportError:
            log.debug("pynvml is not installed: no GPU inventory")
            return None
        try:
            pynvml.nvmlInit()
        except pynvml.NVMLError as exc:
            log.debug("NVML unavailable (%s): no GPU inventory", exc)
            return None
        except OSError as exc:  # a broken driver install can fail below NVML's own checks
            log.warning("NVML could not be loaded (%s): no GPU inventory", exc)
            return None
        _nvml = pynvml
        return _nvml


def reset() -> None:
    """Forget the cached NVML state so the next call tries again (after a driver install)."""
    global _nvml, _tried
    with _lock:
        if _nvml is not None:
            try:
                _nvml.nvmlShutdown()
            except _nvml.NVMLError:
                pass
        _nvml = None
        _tried = False


def available() -> bool:
    """Whether NVML is usable on this machine."""
    return _library() is not None


def gpu_inventory() -> list[dict]:
    """One dict per GPU: index, uuid, name, memory_total_bytes (the `host.gpus` shape)."""
    return _each_device(_inventory_of)


def gpu_readings() -> list[dict]:
    """One dict per GPU: index, utilization_percent, memory used/total, temperature_c, power_w.

    Fields the device cannot report are left out, so the payload never carries guesses.
    """
    return [{k: v for k, v in reading.items() if v is not None} for reading in _each_device(_readings_of)]


def gpu_samples() -> list[dict]:
    """One `kind: gpu` telemetry sample per GPU (with `kind` and `ts`), fields as docs/telemetry.md.

    utilization and memory bandwidth %, memory used/free/total, temperature, power and
    its enforced limit (W), SM and memory clocks (MHz), energy since the driver loaded
    (mJ), volatile ECC corrected/uncorrected totals, and the processes using the GPU.
    """
    ts = round(time.time(), 3)
    samples = []
    for reading in _each_device(_sample_of):
        sample = {"kind": "gpu", "ts": ts}
        sample.update((k, v) for k, v in reading.items() if v is not None)
        samples.append(sample)
    return samples


def _each_device(read: Callable[[Any, int, Any], dict]) -> list[dict]:
    nvml = _library()
    if nvml is None:
        return []
    try:
        count = nvml.nvmlDeviceGetCount()
    except nvml.NVMLError as exc:
        log.warning("NVML could not count GPUs: %s", exc)
        return []
    devices = []
    for index in range(count):
        try:
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            devices.append(read(nvml, index, handle))
        except nvml.NVMLError as exc:
            # A fallen-off-the-bus GPU must not hide the healthy ones.
            log.warning("GPU %d could not be read: %s", index, exc)
    return devices


def _inventory_of(nvml: Any, index: int, handle: Any) -> dict:
    memory = _optional(nvml, nvml.nvmlDeviceGetMemoryInfo, handle)
    return {
        "index": index,
        "uuid": _text(_optional(nvml, nvml.nvmlDeviceGetUUID, handle)),
        "name": _text(_optional(nvml, nvml.nvmlDeviceGetName, handle)),
        "memory_total_bytes": int(memory.total) if memory is not None else None,
    }


def _readings_of(nvml: Any, index: int, handle: Any) -> dict:
    memory = _optional(nvml, nvml.nvmlDeviceGetMemoryInfo, handle)
    utilization = _optional(nvml, nvml.nvmlDeviceGetUtilizationRates, handle)
    temperature = _optional(nvml, nvml.nvmlDeviceGetTemperature, handle, nvml.NVML_TEMPERATURE_GPU)
    power_mw = _optional(nvml, nvml.nvmlDeviceGetPowerUsage, handle)
    return {
        "index": index,
        "utilization_percent": float(utilization.gpu) if utilization is not None else None,
        "memory_used_bytes": int(memory.used) if memory is not None else None,
        "memory_total_bytes": int(memory.total) if memory is not None else None,
        "temperature_c": float(temperature) if temperature is not None else None,
        "power_w": round(power_mw / 1000.0, 3) if power_mw is not None else None,
    }


def _sample_of(nvml: Any, index: int, handle: Any) -> dict:
    memory = _query(nvml, "nvmlDeviceGetMemoryInfo", handle)
    utilization = _query(nvml, "nvmlDeviceGetUtilizationRates", handle)
    volatile = getattr(nvml, "NVML_VOLATILE_ECC", 0)
    return {
        "index": index,
        "uuid": _text(_query(nvml, "nvmlDeviceGetUUID", handle)) or None,
        "utilization_percent": float(utilization.gpu) if utilization is not None else None,
        "memory_util_percent": float(utilization.memory) if utilization is not None else None,
        "memory_used_bytes": int(memory.used) if memory is not None else None,
        "memory_free_bytes": int(memory.free) if memory is not None else None,
        "memory_total_bytes": int(memory.total) if memory is not None else None,
        "temperature_c": _number(_query(nvml, "nvmlDeviceGetTemperature", handle,
                                        getattr(nvml, "NVML_TEMPERATURE_GPU", 0)), float),
        "power_w": _watts(_query(nvml, "nvmlDeviceGetPowerUsage", handle)),
        "power_limit_w": _watts(_query(nvml, "nvmlDeviceGetEnforcedPowerLimit", handle)),
        "sm_clock_mhz": _number(_query(nvml, "nvmlDeviceGetClockInfo", handle, getattr(nvml, "NVML_CLOCK_SM", 1))),
        "mem_clock_mhz": _number(_query(nvml, "nvmlDeviceGetClockInfo", handle, getattr(nvml, "NVML_CLOCK_MEM", 2))),
        "energy_mj": _number(_query(nvml, "nvmlDeviceGetTotalEnergyConsumption", handle)),
        "ecc_sbe_total": _number(_query(nvml, "nvmlDeviceGetTotalEccErrors", handle,
                                        getattr(nvml, "NVML_MEMORY_ERROR_TYPE_CORRECTED", 0), volatile)),
        "ecc_dbe_total": _number(_query(nvml, "nvmlDeviceGetTotalEccErrors", handle,
                                        getattr(nvml, "NVML_MEMORY_ERROR_TYPE_UNCORRECTED", 1), volatile)),
        "processes": _processes(nvml, handle),
    }


def _number(value: Any, kind: type = int) -> Any:
    return None if value is None else kind(value)


def _watts(milliwatts: Any) -> float | None:
    return None if milliwatts is None else round(milliwatts / 1000.0, 3)


_MAX_PROCESSES = 64  # the server's limit per sample


def _processes(nvml: Any, handle: Any) -> list[dict] | None:
    """Compute and graphics processes on the GPU (one entry per pid), or None if NVML cannot say."""
    found: dict[int, dict] = {}
    answered = False
    for query in ("nvmlDeviceGetComputeRunningProcesses", "nvmlDeviceGetGraphicsRunningProcesses"):
        processes = _query(nvml, query, handle)
        if processes is None:
            continue
        answered = True
        for process in processes:
            pid = int(process.pid)
            entry = found.setdefault(pid, {"pid": pid})
            used = getattr(process, "usedGpuMemory", None)  # None where the driver cannot tell (WDDM, MIG)
            if used is not None:
                entry["used_memory_bytes"] = entry.get("used_memory_bytes", 0) + int(used)
    if not answered:
        return None
    for entry in found.values():
        name = _process_name(entry["pid"])
        if name:
            entry["name"] = name
    return sorted(found.values(), key=lambda p: -p.get("used_memory_bytes", 0))[:_MAX_PROCESSES]


def _process_name(pid: int) -> str | None:
    # One read of /proc/<pid>/stat; a pid in another container's namespace is not ours to name.
    try:
        return psutil.Process(pid).name()[:200] or None
    except (psutil.Error, OSError):
        return None


def _query(nvml: Any, name: str, *args: Any) -> Any:
    """`nvml.<name>(*args)`, or None when pynvml lacks the query, the device does not support it, or it failed."""
    call = getattr(nvml, name, None)
    if call is None:
        return None
    errors = (nvml.NVMLError, getattr(nvml, "NVMLLibraryMismatchError", nvml.NVMLError))
    try:
        return call(*args)
    except errors as exc:
        log.debug("%s unavailable: %s", name, exc)
        return None


def _optional(nvml: Any, call: Callable[..., Any], *args: Any) -> Any:
    """The value, or None when this device does not support the query (or it failed)."""
    try:
        return call(*args)
    except nvml.NVMLError as exc:
        log.debug("%s unavailable: %s", getattr(call, "__name__", call), exc)
        return None


def _text(value: Any) -> str:
    # Older pynvml releases return bytes, newer ones str.
    if value is None:
        return ""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
