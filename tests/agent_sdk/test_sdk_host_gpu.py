"""Host inventory and readings (psutil) and the NVML reader (real where possible)."""

import sys
import types

import pytest

from pulseguard_agent import gpu, gpu_inventory, gpu_readings, host_inventory, host_readings

GIB = 1024**3


@pytest.fixture(autouse=True)
def fresh_nvml():
    gpu.reset()
    yield
    gpu.reset()


def _nvml_works() -> bool:
    try:
        import pynvml

        pynvml.nvmlInit()
        pynvml.nvmlShutdown()
        return True
    except Exception:
        return False


def test_gpu_readings_are_empty_without_nvml():
    if _nvml_works():
        pytest.skip("this machine has a working NVIDIA driver")

    assert gpu_readings() == []
    assert gpu_inventory() == []
    assert not gpu.available()


def test_gpu_functions_are_empty_when_pynvml_is_not_installed(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # makes `import pynvml` raise ImportError

    assert gpu_inventory() == [] and gpu_readings() == []


class FakeNVMLError(Exception):
    pass


class FakeNotSupported(FakeNVMLError):
    pass


def _fake_nvml(init_calls: list) -> types.ModuleType:
    """Stands in for pynvml on a machine without a GPU: the one seam the style allows faking."""

    def power(handle):
        if handle == 1:
            raise FakeNotSupported("Not Supported")
        return 312_500  # milliwatts

    def handle_by_index(index):
        if index == 2:
            raise FakeNVMLError("GPU is lost")
        return index

    nvml = types.ModuleType("pynvml")
    nvml.NVMLError = FakeNVMLError
    nvml.NVML_TEMPERATURE_GPU = 0
    nvml.nvmlInit = lambda: init_calls.append(1)
    nvml.nvmlShutdown = lambda: None
    nvml.nvmlDeviceGetCount = lambda: 3
    nvml.nvmlDeviceGetHandleByIndex = handle_by_index
    nvml.nvmlDeviceGetUUID = lambda h: f"GPU-0000000{h}"
    nvml.nvmlDeviceGetName = lambda h: b"NVIDIA H100 80GB HBM3"  # older pynvml returns bytes
    nvml.nvmlDeviceGetMemoryInfo = lambda h: types.SimpleNamespace(total=80 * GIB, used=10 * GIB, free=70 * GIB)
    nvml.nvmlDeviceGetUtilizationRates = lambda h: types.SimpleNamespace(gpu=42, memory=7)
    nvml.nvmlDeviceGetTemperature = lambda h, sensor: 55
    nvml.nvmlDeviceGetPowerUsage = power
    return nvml


def test_nvml_values_are_converted_and_an_unsupported_field_is_left_out(monkeypatch):
    init_calls: list = []
    monkeypatch.setitem(sys.modules, "pynvml", _fake_nvml(init_calls))

    inventory = gpu_inventory()
    readings = gpu_readings()

    assert inventory == [
        {"index": 0, "uuid": "GPU-00000000", "name": "NVIDIA H100 80GB HBM3", "memory_total_bytes": 80 * GIB},
        {"index": 1, "uuid": "GPU-00000001", "name": "NVIDIA H100 80GB HBM3", "memory_total_bytes": 80 * GIB},
    ]  # the lost GPU 2 is skipped, not fatal
    assert readings[0] == {
        "index": 0, "utilization_percent": 42.0, "memory_used_bytes": 10 * GIB, "memory_total_bytes": 80 * GIB,
        "temperature_c": 55.0, "power_w": 312.5,
    }
    assert "power_w" not in readings[1] and readings[1]["temperature_c"] == 55.0
    assert init_calls == [1]  # initialised once, however often it is read


def test_host_inventory_describes_this_machine():
    host = host_inventory()

    assert set(host) == {"hostname", "os", "cpu_count", "memory_total_bytes", "gpus"}
    assert host["hostname"] and host["os"] and len(host["os"]) <= 120
    assert host["cpu_count"] >= 1 and host["memory_total_bytes"] > 0
    assert isinstance(host["gpus"], list)


def test_host_readings_are_in_the_ranges_the_server_accepts():
    host_inventory()  # starts the CPU sampling window, as registration does

    readings = host_readings()

    assert 0 <= readings["cpu_percent"] <= 100
    assert readings["load1"] >= 0
    assert 0 < readings["memory_used_bytes"] <= readings["memory_total_bytes"]
    assert set(readings) <= {"cpu_percent", "load1", "memory_used_bytes", "memory_total_bytes", "gpus"}
