"""GPU placement: which device of which worker has room for a task, least loaded first.

Free memory comes from the workers' latest NVML readings (their heartbeats), minus what
tasks already placed on the device and not finished are expected to use (their VRAM
estimates), so a burst of dispatches does not pile onto one GPU before the next
heartbeat shows it full.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.db import connection

MIB = 2**20


@dataclass
class Device:
    agent_id: str
    node: str  # the worker's agent name (its Celery hostname)
    index: int
    total_mb: int
    free_mb: int
    utilization: float

    @property
    def queue(self) -> str:
        return f"gpu.{self.node}.{self.index}"


def gpu_devices() -> list[Device]:
    """Every GPU of every worker that may take work now, with free memory net of
    placed-but-unfinished tasks."""
    with connection.cursor() as cur:
        cur.execute(
            """
            SELECT a.id::text, a.name, (g->>'index')::int,
                   COALESCE((g->>'memory_total_bytes')::bigint, 0),
                   COALESCE((g->>'memory_total_bytes')::bigint - (g->>'memory_used_bytes')::bigint,
                            (g->>'memory_total_bytes')::bigint, 0),
                   COALESCE((g->>'utilization_percent')::float8, 0),
                   COALESCE((SELECT sum(t.vram_mb) FROM workflows_task t
                             WHERE t.gpu_node = a.name AND t.gpu_index = (g->>'index')::int
                               AND (t.state IN ('leased', 'running') OR (t.state = 'queued' AND t.dispatched_at IS NOT NULL))), 0)
            FROM agents_agent a, jsonb_array_elements(COALESCE(a.readings->'gpus', '[]'::jsonb)) g
            WHERE a.kind = 'worker' AND a.status = 'online' AND a.state <> 'draining'
            """
        )
        rows = cur.fetchall()
    return [
        Device(agent_id=r[0], node=r[1], index=r[2], total_mb=int(r[3] // MIB),
               free_mb=max(int(r[4] // MIB) - int(r[6]), 0), utilization=float(r[5]))
        for r in rows
    ]


def place(devices: list[Device], vram_mb: int) -> Device | None:
    """The least loaded device with room; reserves the memory on the chosen one."""
    fitting = [d for d in devices if d.free_mb >= vram_mb]
    if not fitting:
        return None
    best = min(fitting, key=lambda d: (d.utilization, -d.free_mb, d.node, d.index))
    best.free_mb -= vram_mb
    best.utilization = min(best.utilization + 25.0, 100.0)  # spread a burst over devices
    return best


def why_not(devices: list[Device], vram_mb: int) -> str:
    if not devices:
        return f"waiting for a GPU worker: none is online with GPUs (needs {vram_mb} MiB)"
    best = max(devices, key=lambda d: d.free_mb)
    return (f"waiting for a GPU with {vram_mb} MiB free: the most free is {best.free_mb} MiB "
            f"on {best.node} GPU {best.index}")
