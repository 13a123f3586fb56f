"""Believable fake agents for the simulator: who they are and what they run on.

Profiles are drawn from one seeded `random.Random`, so the same seed gives the same
fleet (names, roles, hosts, which agents misbehave). What their hosts report is in
sim_host.py, the LLM calls they make in sim_llm.py.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass

from pulseguard_agent._version import __version__

GIB = 1024**3
MIB = 1024**2


@dataclass(frozen=True)
class GpuModel:
    """One kind of GPU: NVML's name for it, its memory, its power envelope and clocks (MHz)."""

    name: str
    short: str
    memory_bytes: int
    idle_w: float
    max_w: float
    sm_boost_mhz: int = 1980
    mem_clock_mhz: int = 2619


H100 = GpuModel("NVIDIA H100 80GB HBM3", "h100", 81559 * MIB, 70.0, 700.0, 1980, 2619)
A100 = GpuModel("NVIDIA A100-SXM4-80GB", "a100", 81920 * MIB, 55.0, 400.0, 1410, 1593)
L4 = GpuModel("NVIDIA L4", "l4", 23034 * MIB, 16.0, 72.0, 2040, 6251)
A10G = GpuModel("NVIDIA A10G", "a10g", 23028 * MIB, 25.0, 300.0, 1710, 6251)


@dataclass(frozen=True)
class Role:
    """A kind of agent in the fleet and the hosts, models and GPUs it tends to run on."""

    name: str
    kind: str
    capabilities: tuple[str, ...]
    models: tuple[tuple[str, str], ...]  # (model, provider)
    teams: tuple[str, ...]
    cpus: tuple[int, ...] = (4, 8, 16)
    memory_gib: tuple[int, ...] = (16, 32, 64)
    gpu_counts: tuple[int, ...] = ()
    gpu_models: tuple[GpuModel, ...] = ()
    weight: float = 1.0
    gpu_memory_target: float = 0.0  # share of GPU memory held once the model is loaded
    serving_share: float = 1.0  # share of its GPUs (at least one) holding the served model; the rest run batch work
    task_slots: int = 1  # tasks it works on at once


ROLES: tuple[Role, ...] = (
    Role("planner", "agent", ("planning", "tool-use", "web-search"),
         (("gpt-4o", "openai"), ("claude-sonnet-4", "anthropic"), ("gemini-2.5-pro", "google")),
         ("platform", "growth"), weight=1.0),
    Role("coder", "agent", ("code-gen", "git", "python", "typescript"),
         (("claude-sonnet-4", "anthropic"), ("gpt-4.1", "openai"), ("qwen2.5-coder-32b", "vllm")),
         ("platform", "devex"), cpus=(8, 16), weight=2.0),
    Role("reviewer", "agent", ("code-review", "security-scan"),
         (("claude-opus-4", "anthropic"), ("gpt-4o", "openai")), ("devex", "security"), weight=1.0),
    Role("qa", "agent", ("test-gen", "browser", "playwright"),
         (("gpt-4o-mini", "openai"), ("claude-3-5-haiku", "anthropic")), ("devex", "quality"), weight=1.0),
    Role("researcher", "agent", ("web-search", "summarize", "rag"),
         (("gpt-4o", "openai"), ("gemini-2.5-flash", "google")), ("research", "search"), weight=1.0),
    Role("support", "agent", ("ticket-triage", "summarize", "translate"),
         (("claude-3-5-haiku", "anthropic"), ("gpt-4o-mini", "openai")), ("support",), cpus=(2, 4), weight=1.0),
    Role("embedder", "worker", ("embeddings", "batch", "gpu"),
         (("bge-large-en-v1.5", "tei"), ("nomic-embed-text-v1.5", "tei")), ("search", "research"),
         cpus=(8, 16), memory_gib=(32, 64), gpu_counts=(1, 1, 2), gpu_models=(L4, A10G), weight=1.0,
         gpu_memory_target=0.35, task_slots=2),
    Role("gpu-infer", "worker", ("inference", "batch", "gpu", "long-context"),
         (("llama-3.1-70b", "vllm"), ("qwen2.5-72b", "vllm"), ("mixtral-8x22b", "vllm")), ("ml-platform",),
         cpus=(32, 64, 96), memory_gib=(256, 512, 1024), gpu_counts=(1, 2, 4, 8, 8),
         gpu_models=(H100, H100, A100), weight=1.5, gpu_memory_target=0.9, serving_share=0.5, task_slots=2),
)

REGIONS = {"us-east-1": "abcd", "us-west-2": "abc", "eu-west-1": "abc", "ap-southeast-1": "ab"}
OS_NAMES = (
    "Linux-6.8.0-1015-aws-x86_64-with-glibc2.39",
    "Linux-6.1.0-26-cloud-amd64-x86_64-with-glibc2.36",
    "Linux-5.15.0-119-generic-x86_64-with-glibc2.35",
)


@dataclass
class SimProfile:
    """Everything a simulated agent sends at registration, plus how it misbehaves."""

    index: int
    name: str
    role: Role
    capabilities: list[str]
    labels: dict[str, str]
    model: str
    provider: str
    host: dict
    gpus: list[GpuModel]
    seed: int
    silent_prone: bool = False
    flaky: bool = False
    version: str = __version__


def make_profiles(count: int, prefix: str, rng: random.Random, *, silent_rate: float, fail_rate: float) -> list[SimProfile]:
    """`count` profiles named `{prefix}-{role}-{i:02d}`; exact shares go silent or fail."""
    silent = set(rng.sample(range(count), _share(count, silent_rate)))
    calm = [i for i in range(count) if i not in silent]
    # Silent and flaky agents are different ones where the fleet is big enough.
    pool = calm if len(calm) >= _share(count, fail_rate) else list(range(count))
    flaky = set(rng.sample(pool, _share(count, fail_rate)))
    weights = [role.weight for role in ROLES]
    profiles = []
    for i in range(count):
        # The first agents cover every role so even a small demo fleet is varied.
        role = ROLES[i] if i < len(ROLES) else rng.choices(ROLES, weights)[0]
        profiles.append(_profile(i, prefix, role, rng, silent_prone=i in silent, flaky=i in flaky))
    return profiles


def _share(count: int, rate: float) -> int:
    return min(count, int(count * rate + 0.5))


def _profile(i: int, prefix: str, role: Role, rng: random.Random, *, silent_prone: bool, flaky: bool) -> SimProfile:
    region = rng.choice(list(REGIONS))
    zone = region + rng.choice(REGIONS[region])
    model, provider = rng.choice(role.models)
    gpu_model = rng.choice(role.gpu_models) if role.gpu_models else None
    gpus = [gpu_model] * rng.choice(role.gpu_counts) if gpu_model else []
    ip = f"10-{rng.randrange(256)}-{rng.randrange(256)}-{rng.randrange(1, 255)}"
    host = {
        "hostname": f"ip-{ip}.{region}.compute.internal",
        "os": rng.choice(OS_NAMES),
        "cpu_count": rng.choice(role.cpus),
        "memory_total_bytes": rng.choice(role.memory_gib) * GIB,
        "gpus": [
            {"index": n, "uuid": f"GPU-{uuid.UUID(int=rng.getrandbits(128), version=4)}", "name": g.name,
             "memory_total_bytes": g.memory_bytes}
            for n, g in enumerate(gpus)
        ],
    }
    labels = {"team": rng.choice(role.teams), "region": region, "zone": zone,
              "env": "prod" if rng.random() < 0.8 else "staging"}
    if gpus:
        labels["accelerator"] = gpus[0].short
    return SimProfile(
        index=i, name=f"{prefix}-{role.name}-{i:02d}", role=role, capabilities=list(role.capabilities),
        labels=labels, model=model, provider=provider, host=host, gpus=gpus, seed=rng.getrandbits(64),
        silent_prone=silent_prone, flaky=flaky,
    )
