"""What a simulated agent's host reports: heartbeat readings and full host and GPU telemetry.

Every figure is a smooth random walk toward a target set by the agent's state (busy,
idle, draining, isolated), so charts look like a fleet rather than noise: GPU
temperature lags utilization, power follows it, the energy counter only grows, ECC
corrected errors turn up now and then on a few GPUs, clocks boost under load.

GPUs that hold the served model (all of an embedder's, half of a gpu-infer host's) sit
at the role's memory share; the others are nearly empty until a task takes memory on
them (`allocate`), which is what the server's claim matches against.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

from pulseguard_agent.sim_fleet import GIB, MIB, GpuModel, SimProfile

_PROCESS_NAMES = {"gpu-infer": "vllm", "embedder": "text-embeddings-router"}
_IDLE_SM_MHZ = 345
_THROTTLE_C = 83.0


@dataclass
class FakeHost:
    """Readings for one simulated host; `readings()` for heartbeats, `samples()` for telemetry."""

    profile: SimProfile
    rng: random.Random
    cpu: float = 10.0
    memory_share: float = 0.3
    load: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])
    gpu_util: list[float] = field(default_factory=list)
    gpu_memory_share: list[float] = field(default_factory=list)
    gpu_temp: list[float] = field(default_factory=list)
    gpu_power: list[float] = field(default_factory=list)
    gpu_energy_mj: list[float] = field(default_factory=list)
    gpu_sbe: list[int] = field(default_factory=list)
    gpu_dbe: list[int] = field(default_factory=list)
    task_mb: list[int] = field(default_factory=list)  # GPU memory held by running tasks, per GPU

    def __post_init__(self) -> None:
        self.cpu = self.rng.uniform(3, 20)
        self.memory_share = self.rng.uniform(0.2, 0.4)
        self.load = [self.cpu / 100 * self.profile.host["cpu_count"]] * 3
        gpus = self.profile.gpus
        self.gpu_util = [self.rng.uniform(0, 10) for _ in gpus]
        role = self.profile.role
        serving = max(1, round(len(gpus) * role.serving_share))
        self.serving = [n < serving for n in range(len(gpus))]
        self.gpu_memory_share = [self._memory_target(n) * self.rng.uniform(0.8, 1.0) for n in range(len(gpus))]
        self.task_mb = [0 for _ in gpus]
        self.gpu_temp = [self.rng.uniform(30, 38) for _ in gpus]
        self.gpu_power = [g.idle_w for g in gpus]
        # Fixed per host, from the profile's seed, so they do not shift the walks' draws.
        fixed = random.Random(self.profile.seed ^ 0x5EED)
        self.gpu_energy_mj = [fixed.uniform(1e8, 5e10) for _ in gpus]  # since the driver loaded, days ago
        self.gpu_sbe = [fixed.choice((0, 0, 0, 0, 0, 2, 17)) for _ in gpus]
        self.gpu_dbe = [0 for _ in gpus]
        self.ecc_prone = [fixed.random() < 0.15 for _ in gpus]
        big_disk = (1000, 2000, 4000) if gpus else (100, 200, 500)
        self.disk_total = fixed.choice(big_disk) * 1000**3
        self.disk_share = fixed.uniform(0.25, 0.6)
        self.pid = fixed.randrange(2000, 400_000)

    def readings(self, state: str, isolated: bool = False) -> dict:
        """Next heartbeat readings for an agent in `state` (isolated agents get no work: near idle)."""
        self._advance(state, isolated)
        total = self.profile.host["memory_total_bytes"]
        readings: dict = {
            "cpu_percent": round(self.cpu, 1),
            "load1": round(self.load[0], 2),
            "memory_used_bytes": int(total * self.memory_share),
            "memory_total_bytes": total,
        }
        if self.profile.gpus:
            readings["gpus"] = [
                {"index": n, "utilization_percent": round(self.gpu_util[n], 1),
                 "memory_used_bytes": self._used(n), "memory_total_bytes": g.memory_bytes,
                 "temperature_c": round(self.gpu_temp[n], 1), "power_w": round(self.gpu_power[n], 1)}
                for n, g in enumerate(self.profile.gpus)
            ]
        return readings

    def samples(self, state: str, isolated: bool, ts: float, seconds: float) -> list[dict]:
        """One host sample and one per GPU at `ts`, `seconds` after the previous ones."""
        busy = self._advance(state, isolated, seconds)
        total = self.profile.host["memory_total_bytes"]
        self.disk_share = min(0.95, self.disk_share + (2e-8 if busy else 2e-9) * seconds)
        worker = self.profile.role.kind == "worker"
        host = {
            "kind": "host", "ts": ts, "cpu_percent": round(self.cpu, 1),
            "load1": round(self.load[0], 2), "load5": round(self.load[1], 2), "load15": round(self.load[2], 2),
            "memory_used_bytes": int(total * self.memory_share), "memory_total_bytes": total,
            "disk_used_bytes": int(self.disk_total * self.disk_share), "disk_total_bytes": self.disk_total,
            "disk_read_bytes_per_s": self._rate(40 * MIB if busy and worker else 6 * MIB if busy else 0.2 * MIB),
            "disk_write_bytes_per_s": self._rate(8 * MIB if busy else 0.15 * MIB),
            "net_rx_bytes_per_s": self._rate(2 * MIB if busy and worker else 250 * 1024 if busy else 6 * 1024),
            "net_tx_bytes_per_s": self._rate(4 * MIB if busy and worker else 90 * 1024 if busy else 4 * 1024),
        }
        return [host, *(self._gpu_sample(n, g, ts, seconds) for n, g in enumerate(self.profile.gpus))]

    def allocate(self, vram_mb: int) -> tuple[int | None, int]:
        """Take `vram_mb` on the GPU with the most free memory: (its index, or None if none has room; the most free MiB)."""
        free = [(self._free_mb(n), n) for n in range(len(self.profile.gpus))]
        if not free:
            return None, 0
        most, index = max(free)
        if most < vram_mb:
            return None, most
        self.task_mb[index] += vram_mb
        return index, most

    def release(self, index: int, vram_mb: int) -> None:
        """Give back what `allocate` took."""
        self.task_mb[index] = max(0, self.task_mb[index] - vram_mb)

    # --- internals -------------------------------------------------------------------

    def _memory_target(self, n: int) -> float:
        # A GPU without the served model holds only its CUDA context (a few hundred MiB).
        return self.profile.role.gpu_memory_target if self.serving[n] else 0.006

    def _used(self, n: int) -> int:
        gpu = self.profile.gpus[n]
        return min(gpu.memory_bytes, int(gpu.memory_bytes * self.gpu_memory_share[n]) + self.task_mb[n] * MIB)

    def _free_mb(self, n: int) -> int:
        return (self.profile.gpus[n].memory_bytes - self._used(n)) // MIB

    def _advance(self, state: str, isolated: bool, seconds: float = 10.0) -> bool:
        busy = state == "busy" and not isolated
        cpu_target = 70.0 if busy else 30.0 if state == "draining" else 6.0
        self.cpu = _drift(self.rng, self.cpu, cpu_target, noise=6.0)
        self.memory_share = _drift(self.rng, self.memory_share, 0.65 if busy else 0.35, noise=0.02, hi=0.97)
        load1 = self.cpu / 100 * self.profile.host["cpu_count"] * self.rng.uniform(0.8, 1.2)
        # Like the kernel's: exponentially damped averages over 1, 5 and 15 minutes.
        for i, window in enumerate((60.0, 300.0, 900.0)):
            weight = 1.0 if i == 0 else 1 - math.exp(-max(seconds, 0.0) / window)
            self.load[i] += weight * (load1 - self.load[i])
        for n, gpu in enumerate(self.profile.gpus):
            working = (busy and self.serving[n]) or self.task_mb[n] > 0
            self.gpu_util[n] = _drift(self.rng, self.gpu_util[n], 88.0 if working else 2.0, pull=0.4, noise=5.0)
            target_memory = self._memory_target(n) * (1.0 if busy else 0.95)
            self.gpu_memory_share[n] = _drift(self.rng, self.gpu_memory_share[n], target_memory,
                                              noise=0.01 if self.serving[n] else 0.0005, hi=0.99)
            util = self.gpu_util[n]
            # The die heats and cools over tens of seconds: temperature trails utilization.
            self.gpu_temp[n] = _drift(self.rng, self.gpu_temp[n], 31.0 + 0.5 * util, pull=0.3, noise=0.8, lo=25.0,
                                      hi=92.0)
            power = gpu.idle_w + (gpu.max_w - gpu.idle_w) * (util / 100) ** 1.2 + self.rng.gauss(0, 4)
            self.gpu_power[n] = min(max(power, gpu.idle_w * 0.8), gpu.max_w)
        return busy

    def _gpu_sample(self, n: int, gpu: GpuModel, ts: float, seconds: float) -> dict:
        rng = self.rng
        util, temp, power = self.gpu_util[n], self.gpu_temp[n], self.gpu_power[n]
        self.gpu_energy_mj[n] += power * max(seconds, 0.0) * 1000.0
        if self.ecc_prone[n] and rng.random() < 0.02:
            self.gpu_sbe[n] += rng.randint(1, 3)
        if rng.random() < 0.00002:
            self.gpu_dbe[n] += 1
        used = self._used(n)
        if util < 5:
            sm_clock = _IDLE_SM_MHZ
        else:
            sm_clock = int(gpu.sm_boost_mhz * rng.uniform(0.93, 1.0) * (0.85 if temp > _THROTTLE_C else 1.0))
        sample = {
            "kind": "gpu", "ts": ts, "index": n, "uuid": self.profile.host["gpus"][n]["uuid"],
            "utilization_percent": round(util, 1),
            "memory_util_percent": round(min(max(util * 0.55 + rng.gauss(0, 3), 0.0), 100.0), 1),
            "memory_used_bytes": used, "memory_free_bytes": gpu.memory_bytes - used, "memory_total_bytes": gpu.memory_bytes,
            "temperature_c": round(temp, 1), "power_w": round(power, 1), "power_limit_w": gpu.max_w,
            "sm_clock_mhz": sm_clock, "mem_clock_mhz": gpu.mem_clock_mhz, "energy_mj": int(self.gpu_energy_mj[n]),
            "ecc_sbe_total": self.gpu_sbe[n], "ecc_dbe_total": self.gpu_dbe[n], "processes": [],
        }
        task_bytes = self.task_mb[n] * MIB
        if used - task_bytes > 1 * GIB:  # a model is loaded: one serving process holds it
            name = _PROCESS_NAMES.get(self.profile.role.name, "python3")
            sample["processes"] = [{"pid": self.pid + n, "name": name, "used_memory_bytes": used - task_bytes - 500 * MIB}]
        if task_bytes:  # a task's own process (a batch job, a fine-tune)
            sample["processes"].append({"pid": self.pid + 100 + n, "name": "python3", "used_memory_bytes": task_bytes})
        return sample

    def _rate(self, typical: float) -> float:
        return round(typical * self.rng.lognormvariate(0, 0.5), 1)


def _drift(rng: random.Random, value: float, target: float, *, pull: float = 0.25, noise: float = 1.0,
           lo: float = 0.0, hi: float = 100.0) -> float:
    """One step of a mean-reverting random walk, kept within [lo, hi]."""
    return min(hi, max(lo, value + pull * (target - value) + rng.gauss(0, noise)))
