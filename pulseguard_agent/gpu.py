"""NVIDIA GPUs through NVML: the SDK's one seam for GPUs.

pynvml is imported lazily and NVML initialised once per process. On a machine without
the library or a driver (most CPU hosts) every function returns [] and never raises:
an agent must keep heartbeating whatever the GPU stack is doing. Fields a device does
not support (power on some boards, temperature in some VMs) come back as None.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

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
