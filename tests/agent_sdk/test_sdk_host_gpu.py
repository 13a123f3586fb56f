"""Host inventory and readings (psutil) and the NVML reader (real where possible)."""

import os
import sys
import time
import types

import pytest

from pulseguard_agent import HostSampler, gpu, gpu_inventory, gpu_readings, gpu_samples, host_inventory, host_readings
from pulseguard_agent.host import _rates

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
    assert gpu_samples() == []
    assert not gpu.available()


def test_gpu_functions_are_empty_when_pynvml_is_not_installed(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # makes `import pynvml` raise ImportError

    assert gpu_inventory() == [] and gpu_readings() == [] and gpu_samples() == []


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


def _full_nvml(init_calls: list) -> types.ModuleType:
    """The fake above plus the queries a telemetry sample makes; GPU 1 lacks some of them, as boards do."""
    nvml = _fake_nvml(init_calls)
    nvml.NVMLLibraryMismatchError = type("NVMLLibraryMismatchError", (Exception,), {})
    nvml.NVML_CLOCK_SM, nvml.NVML_CLOCK_MEM = 1, 2
    nvml.NVML_MEMORY_ERROR_TYPE_CORRECTED, nvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED, nvml.NVML_VOLATILE_ECC = 0, 1, 0

    def only_gpu_0(value):
        def query(handle, *args):
            if handle == 1:
                raise FakeNotSupported("Not Supported")
            return value(*args) if callable(value) else value
        return query

    def compute_processes(handle):
        if handle == 1:
            raise nvml.NVMLLibraryMismatchError("Unversioned function called")
        return [types.SimpleNamespace(pid=os.getpid(), usedGpuMemory=6 * GIB),
                types.SimpleNamespace(pid=2**22 + 17, usedGpuMemory=None)]  # another container's process

    nvml.nvmlDeviceGetEnforcedPowerLimit = lambda h: 700_000
    nvml.nvmlDeviceGetClockInfo = lambda h, clock: {1: 1980, 2: 2619}[clock]
    nvml.nvmlDeviceGetTotalEnergyConsumption = only_gpu_0(912_837_465)
    nvml.nvmlDeviceGetTotalEccErrors = only_gpu_0(lambda error_type, counter: 3 if error_type == 0 else 0)
    nvml.nvmlDeviceGetComputeRunningProcesses = compute_processes
    nvml.nvmlDeviceGetGraphicsRunningProcesses = lambda h: [types.SimpleNamespace(pid=os.getpid(), usedGpuMemory=GIB)]
    return nvml


def test_a_gpu_sample_carries_every_field_nvml_gives_and_skips_the_ones_it_refuses(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", _full_nvml([]))

    first, second = gpu_samples()

    assert first == {
        "kind": "gpu", "ts": pytest.approx(time.time(), abs=5), "index": 0, "uuid": "GPU-00000000",
        "utilization_percent": 42.0, "memory_util_percent": 7.0,
        "memory_used_bytes": 10 * GIB, "memory_free_bytes": 70 * GIB, "memory_total_bytes": 80 * GIB,
        "temperature_c": 55.0, "power_w": 312.5, "power_limit_w": 700.0, "sm_clock_mhz": 1980, "mem_clock_mhz": 2619,
        "energy_mj": 912_837_465, "ecc_sbe_total": 3, "ecc_dbe_total": 0,
        "processes": [
            {"pid": os.getpid(), "used_memory_bytes": 7 * GIB, "name": first["processes"][0]["name"]},
            {"pid": 2**22 + 17},  # no memory figure and no name: neither is guessed
        ],
    }
    assert first["processes"][0]["name"]  # this test's own process, named from /proc
    assert {"power_w", "energy_mj", "ecc_sbe_total", "ecc_dbe_total"}.isdisjoint(second)
    assert second["processes"] == [{"pid": os.getpid(), "used_memory_bytes": GIB, "name": first["processes"][0]["name"]}]
    assert gpu_readings()[0] == {  # the heartbeat keeps its own, smaller, set of fields
        "index": 0, "utilization_percent": 42.0, "memory_used_bytes": 10 * GIB, "memory_total_bytes": 80 * GIB,
        "temperature_c": 55.0, "power_w": 312.5,
    }


def test_an_older_pynvml_without_the_newer_queries_still_gives_a_sample(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", _fake_nvml([]))

    sample = gpu_samples()[0]

    assert sample["utilization_percent"] == 42.0 and sample["memory_free_bytes"] == 70 * GIB
    assert {"power_limit_w", "sm_clock_mhz", "energy_mj", "ecc_sbe_total", "processes"}.isdisjoint(sample)


def test_host_samples_measure_rates_from_the_previous_sample():
    sampler = HostSampler()

    first = sampler.sample()
    sum(range(200_000))  # a little CPU work in between
    time.sleep(0.02)
    second = sampler.sample()

    assert first["kind"] == "host" and "cpu_percent" not in first and "net_rx_bytes_per_s" not in first
    assert 0 <= second["cpu_percent"] <= 100
    assert second["load1"] >= 0 and second["load5"] >= 0 and second["load15"] >= 0
    assert 0 < second["memory_used_bytes"] <= second["memory_total_bytes"]
    assert 0 < second["disk_used_bytes"] <= second["disk_total_bytes"]
    assert second["net_rx_bytes_per_s"] >= 0 and second["net_tx_bytes_per_s"] >= 0
    assert second["ts"] >= first["ts"]


def test_a_counter_that_went_backwards_gives_no_rate_for_that_interval():
    before = {"cpu_idle": 100.0, "cpu_total": 200.0, "net_rx": 5000, "net_tx": 100, "disk_read": 10}
    after = {"cpu_idle": 150.0, "cpu_total": 300.0, "net_rx": 7000, "net_tx": 50}  # NIC reset; disk counters gone

    rates = _rates(before, after, 2.0)

    assert rates == {"cpu_percent": 50.0, "net_rx_bytes_per_s": 1000.0}
