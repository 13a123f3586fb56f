"""Helpers for the browser tests: signing in, waiting for the live socket, an HTTP agent."""

from __future__ import annotations

import threading
import zlib
from pathlib import Path

import httpx
from django.contrib.auth.hashers import PBKDF2PasswordHasher
from playwright.sync_api import expect

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"  # screenshots, server log (gitignored)


class FastPBKDF2PasswordHasher(PBKDF2PasswordHasher):
    """Same algorithm name as Django's, far fewer rounds, so making users in the test
    process is instant. The server reads the rounds from the hash, so it accepts them
    (and upgrades the hash on the first sign-in, as Django always does)."""

    iterations = 1_000


def login(page, username: str, password: str | None = None) -> None:
    """Sign in through the real form, as a person would."""
    page.goto("/accounts/login/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password if password is not None else "pw-" + username)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(lambda url: "/accounts/login/" not in url)


def wait_live(page) -> None:
    """Wait until the page's live socket is open."""
    expect(page.locator("#live-indicator .label")).to_have_text("live")


def in_thread(fn, *args, **kwargs):
    """Run Django code outside Playwright's event loop (the ORM and async_to_sync refuse
    to run in a thread with a running loop) and return its result."""
    from django.db import connection

    box: dict = {}

    def run():
        try:
            box["value"] = fn(*args, **kwargs)
        except BaseException as exc:  # re-raised in the caller
            box["error"] = exc
        finally:
            connection.close()

    t = threading.Thread(target=run)
    t.start()
    t.join(30)
    if "error" in box:
        raise box["error"]
    return box.get("value")


class AgentClient:
    """An agent talking to the live server over HTTP, the way the SDK does."""

    def __init__(self, base_url: str, enrollment_key: str):
        self.http = httpx.Client(base_url=base_url, timeout=10)
        self.enrollment_key = enrollment_key
        self.id: str | None = None
        self.token: str | None = None

    def register(self, name: str, **fields) -> dict:
        body = {
            "name": name, "kind": "agent", "capabilities": ["llm", "tools"], "labels": {"team": "search", "region": "eu-west"},
            "version": "1.4.2", "model": "gpt-4o-mini", "provider": "openai",
            "host": {"hostname": f"{name}.prod.internal", "os": "Linux 6.8", "cpu_count": 16,
                     "memory_total_bytes": 64 * 2**30, "gpus": []},
        }
        body.update(fields)
        r = self.http.post("/api/v1/agents/register", json=body, headers={"Authorization": f"Bearer {self.enrollment_key}"})
        assert r.status_code == 201, r.text
        data = r.json()
        self.id, self.token = data["id"], data["token"]
        return data

    def heartbeat(self, **body) -> dict:
        body.setdefault("state", "idle")
        r = self.http.post(f"/api/v1/agents/{self.id}/heartbeat", json=body, headers={"Authorization": f"Bearer {self.token}"})
        assert r.status_code == 200, r.text
        return r.json()

    def close(self):
        self.http.close()




# --- a realistic fleet, for screenshots and for looking at pages by hand -----------------

GiB = 2**30

_H100 = "NVIDIA H100 80GB HBM3"
_A100 = "NVIDIA A100-SXM4-80GB"


def _gpus(name: str, count: int, memory_gib: int) -> list[dict]:
    return [
        {"index": i, "uuid": f"GPU-{zlib.crc32(f'{name}/{i}'.encode()):08x}-6d2b-4c3e-9f1a-{i:012x}", "name": name,
         "memory_total_bytes": memory_gib * GiB}
        for i in range(count)
    ]


def _gpu_readings(count: int, memory_gib: int, utils: list[float], temps: list[float]) -> list[dict]:
    return [
        {"index": i, "utilization_percent": utils[i % len(utils)], "temperature_c": temps[i % len(temps)],
         "memory_total_bytes": memory_gib * GiB, "memory_used_bytes": int(memory_gib * GiB * utils[i % len(utils)] / 110),
         "power_w": 180 + 4 * utils[i % len(utils)]}
        for i in range(count)
    ]


# name, kind, model, provider, labels, host, state, cpu %, mem used GiB, latency ms, gpu readings, fate
FLEET = [
    ("planner-eu-1", "agent", "gpt-4o", "openai", {"team": "search", "env": "prod", "region": "eu-west-1"},
     dict(cpu_count=16, mem=64), "busy", 42.0, 39, 180, None, "online"),
    ("planner-eu-2", "agent", "gpt-4o", "openai", {"team": "search", "env": "prod", "region": "eu-west-1"},
     dict(cpu_count=16, mem=64), "idle", 7.5, 21, 140, None, "online"),
    ("retriever-us-east-1", "agent", "claude-sonnet-4", "anthropic", {"team": "search", "env": "prod", "region": "us-east-1"},
     dict(cpu_count=8, mem=32), "busy", 63.0, 22, 420, None, "online"),
    ("summarizer-ap-south-1", "agent", "llama-3.1-70b-instruct", "vllm", {"team": "content", "env": "prod"},
     dict(cpu_count=64, mem=512, gpus=(_A100, 4, 80)), "busy", 28.0, 301, 95, ([88, 91, 79, 85], [66, 69, 63, 67]), "online"),
    ("gpu-worker-h100-01", "worker", "", "", {"pool": "train", "zone": "dc1-r12"},
     dict(cpu_count=192, mem=2048, gpus=(_H100, 8, 80)), "busy", 35.0, 1210, 12, ([97, 94, 99, 92, 18, 96, 95, 93], [74, 71, 77, 70, 41, 73, 72, 71]), "online"),
    ("gpu-worker-h100-02", "worker", "", "", {"pool": "train", "zone": "dc1-r12"},
     dict(cpu_count=192, mem=2048, gpus=(_H100, 8, 80)), "busy", 31.0, 1180, 15, ([90, 92], [70, 72]), "late"),
    ("gpu-worker-l4-07", "worker", "", "", {"pool": "inference", "zone": "dc2-r03"},
     dict(cpu_count=32, mem=128, gpus=("NVIDIA L4", 1, 24)), "idle", 3.0, 14, 22, ([0], [38]), "stale"),
    ("cpu-worker-03", "worker", "", "", {"pool": "etl", "zone": "dc1-r04"},
     dict(cpu_count=48, mem=256), "busy", 81.0, 188, 9, None, "online"),
    ("triage-bot", "agent", "mistral-large-latest", "mistral", {"team": "support", "env": "prod"},
     dict(cpu_count=4, mem=16), "idle", 12.0, 6, 610, None, "isolated"),
    ("code-review-agent-canary-7f3a9c2e-eu-central-1-experimental", "agent", "claude-opus-4-20250514-extended-thinking", "anthropic",
     {"team": "platform-engineering", "env": "canary", "region": "eu-central-1", "owner": "release-train-4"},
     dict(cpu_count=8, mem=32, hostname="ip-10-42-177-23.eu-central-1.compute.internal"), "busy", 55.0, 17, 2400, None, "online"),
    ("support-agent-fr", "agent", "claude-3-5-haiku", "anthropic", {"team": "support", "locale": "fr-FR"},
     dict(cpu_count=4, mem=8), "idle", 0.0, 3, 300, None, "offline"),
    ("evaluator-nightly", "agent", "qwen2.5-72b-instruct", "vllm", {"team": "research", "env": "staging"},
     dict(cpu_count=32, mem=256, gpus=(_A100, 2, 80)), "idle", 1.0, 40, 90, ([0, 0], [35, 36]), "stale"),
    ("embedder-01", "agent", "text-embedding-3-large", "openai", {"team": "search", "env": "prod"},
     dict(cpu_count=8, mem=16), "busy", 22.0, 5, 60, None, "online"),
    ("browser-agent-02", "agent", "gpt-4.1", "openai", {"team": "ops", "env": "prod"},
     dict(cpu_count=8, mem=32), "draining", 47.0, 25, 900, None, "late"),
    ("ocr-worker-rtx-01", "worker", "", "", {"pool": "ocr", "zone": "office-lab"},
     dict(cpu_count=24, mem=128, gpus=("NVIDIA GeForce RTX 4090", 2, 24)), "busy", 39.0, 61, 30, ([71, 64], [68, 65]), "online"),
    ("sql-analyst", "agent", "o3-mini", "openai", {"team": "data", "env": "prod"},
     dict(cpu_count=4, mem=16), "idle", 9.0, 7, 3900, None, "stale"),
    ("release-notes-writer", "agent", "gpt-4o-mini", "openai", {"team": "platform-engineering"},
     dict(cpu_count=2, mem=4), "idle", 4.0, 1, 210, None, "online"),
]


def seed_fleet(*, enrollment_key: str, operator=None) -> dict[str, str]:
    """Register FLEET through the services, give each a heartbeat with readings and move
    it to its status the way it would get there. Returns {name: agent id}.

    Publishes live events: call it through `in_thread` while a browser is running.
    """
    from datetime import timedelta

    from django.utils import timezone

    from apps.agents import services
    from apps.agents.models import Agent

    ids, tokens = {}, {}
    for name, kind, model, provider, labels, host, state, cpu, mem_used, latency, gpu_r, _ in FLEET:
        gpu_name, gpu_count, gpu_mem = host.get("gpus") or ("", 0, 0)
        agent, token = services.agent_register(
            enrollment_key=enrollment_key, name=name, kind=kind,
            capabilities=(["gpu", "cuda", "batch"] if gpu_count else ["cpu"]) if kind == "worker" else ["llm", "tools", "web"],
            labels=labels, version="2.3.1" if kind == "worker" else "1.8.0",
            host={"hostname": host.get("hostname") or f"{name}.prod.internal", "os": "Ubuntu 22.04 (Linux 6.8)",
                  "cpu_count": host["cpu_count"], "memory_total_bytes": host["mem"] * GiB,
                  "gpus": _gpus(gpu_name, gpu_count, gpu_mem) if gpu_count else []},
            model=model, provider=provider,
        )
        ids[name], tokens[name] = str(agent.pk), token
        readings = {"cpu_percent": cpu, "load1": round(cpu / 100 * host["cpu_count"], 2),
                    "memory_used_bytes": mem_used * GiB, "memory_total_bytes": host["mem"] * GiB}
        if gpu_r:
            readings["gpus"] = _gpu_readings(gpu_count, gpu_mem, *gpu_r)
        services.agent_heartbeat_record(agent_id=agent.pk, token=token, state=state, readings=readings, latency_ms=latency)

    # A little history on the busiest worker: it went late once, came back, was drained.
    h100 = ids["gpu-worker-h100-01"]
    now = timezone.now()
    Agent.objects.filter(pk=h100).update(last_heartbeat_at=now - timedelta(seconds=75))
    services.agents_check_heartbeats()
    services.agent_heartbeat_record(agent_id=h100, token=tokens["gpu-worker-h100-01"], state="busy", latency_ms=12)
    drain = services.agent_command_issue(agent=Agent.objects.get(pk=h100), type="drain",
                                         args={"reason": "kernel upgrade"}, actor=operator)
    services.agent_heartbeat_record(agent_id=h100, token=tokens["gpu-worker-h100-01"], state="draining", latency_ms=14)
    services.agent_command_ack(agent=Agent.objects.get(pk=h100), command_id=drain.pk, ok=True,
                               message="drained: 3 tasks finished, 0 handed back")
    services.agent_command_issue(agent=Agent.objects.get(pk=h100), type="restart", actor=operator)
    services.agent_heartbeat_record(agent_id=h100, token=tokens["gpu-worker-h100-01"], state="busy", latency_ms=11)

    fates = {row[0]: row[-1] for row in FLEET}
    late = [ids[n] for n, fate in fates.items() if fate == "late"]
    stale = [ids[n] for n, fate in fates.items() if fate == "stale"]
    Agent.objects.filter(pk__in=late).update(last_heartbeat_at=now - timedelta(seconds=48))
    Agent.objects.filter(pk__in=stale).update(last_heartbeat_at=now - timedelta(minutes=14))
    services.agents_check_heartbeats()
    for name, fate in fates.items():
        if fate == "isolated":
            services.agent_command_issue(agent=Agent.objects.get(pk=ids[name]), type="isolate",
                                         args={"reason": "prompt-injection alert on ticket #4812"}, actor=operator)
        elif fate == "offline":
            services.agent_goodbye(agent=Agent.objects.get(pk=ids[name]))
    return ids


# --- telemetry for the seeded fleet: hours of host and GPU samples, a day of LLM calls ----

# Roughly what each model's calls look like: tokens in, tokens out, latency ms, calls per hour.
_LLM_PROFILE = {
    "gpt-4o": (2400, 420, 1900, 16), "claude-sonnet-4": (5200, 700, 4200, 10),
    "llama-3.1-70b-instruct": (3100, 900, 2600, 22), "mistral-large-latest": (1400, 260, 1500, 6),
    "claude-opus-4-20250514-extended-thinking": (9000, 2400, 21000, 3), "claude-3-5-haiku": (900, 180, 700, 8),
    "qwen2.5-72b-instruct": (2800, 1200, 3800, 5), "text-embedding-3-large": (600, 0, 120, 40),
    "gpt-4.1": (3600, 800, 3100, 9), "o3-mini": (1800, 2200, 9000, 4), "gpt-4o-mini": (1200, 300, 900, 12),
}
_ERRORS = ["rate_limit", "timeout", "server_error"]


def _iso(ts) -> str:
    return ts.isoformat()


def _walk(rng, n: int, end: float, lo: float, hi: float, spread: float) -> list[float]:
    """A bounded random walk of n values that ends at `end` (the reading the row shows)."""
    values, v = [end], end
    for _ in range(n - 1):
        v = min(hi, max(lo, v + rng.uniform(-spread, spread)))
        values.append(v)
    return values[::-1]


def fleet_samples(ids: dict[str, str], *, hours: float = 3, llm_hours: float = 24, every_s: int = 60) -> dict[str, list]:
    """Realistic telemetry batches for FLEET, by agent id: host and GPU samples every
    `every_s` over the last `hours` (ending where each agent stopped reporting, at the
    readings seed_fleet gave it) and LLM calls over the last `llm_hours`."""
    import math
    import random
    from datetime import timedelta

    from django.utils import timezone

    now = timezone.now().replace(microsecond=0)
    batches: dict[str, list] = {}
    for name, kind, model, provider, labels, host, state, cpu, mem_used, latency, gpu_r, fate in FLEET:
        rng = random.Random(name)
        samples: list[dict] = []
        silent_for = {"stale": 14 * 60, "offline": 40 * 60, "late": 48}.get(fate, 20)
        last = now - timedelta(seconds=silent_for)
        n = int(hours * 3600 / every_s)
        times = [last - timedelta(seconds=every_s * (n - 1 - i)) for i in range(n)]
        cpus = _walk(rng, n, cpu, 0, 100, 6)
        mems = _walk(rng, n, mem_used * GiB, 0.2 * mem_used * GiB, host["mem"] * GiB, 0.02 * mem_used * GiB + 0.05 * GiB)
        disk_total = (2000 if host["cpu_count"] >= 32 else 500) * GiB
        for i, ts in enumerate(times):
            busy = cpus[i] / 100
            samples.append({
                "kind": "host", "ts": _iso(ts), "cpu_percent": round(cpus[i], 1),
                "load1": round(busy * host["cpu_count"] * rng.uniform(0.8, 1.2), 2),
                "load5": round(busy * host["cpu_count"], 2), "load15": round(busy * host["cpu_count"] * 0.95, 2),
                "memory_used_bytes": int(mems[i]), "memory_total_bytes": host["mem"] * GiB,
                "disk_used_bytes": int(disk_total * 0.41 + i * 2**20), "disk_total_bytes": disk_total,
                "disk_read_bytes_per_s": round(rng.uniform(0.2, 1.5) * busy * 80 * 2**20, 1),
                "disk_write_bytes_per_s": round(rng.uniform(0.2, 1.0) * busy * 30 * 2**20, 1),
                "net_rx_bytes_per_s": round((0.5 + busy) * rng.uniform(4, 9) * 2**20, 1),
                "net_tx_bytes_per_s": round((0.5 + busy) * rng.uniform(1, 3) * 2**20, 1),
            })
        gpu_name, gpu_count, gpu_mem = host.get("gpus") or ("", 0, 0)
        for index in range(gpu_count if gpu_r else 0):
            utils = _walk(rng, n, gpu_r[0][index % len(gpu_r[0])], 0, 100, 7)
            temps = _walk(rng, n, gpu_r[1][index % len(gpu_r[1])], 30, 90, 1.5)
            total = gpu_mem * GiB
            limit = 700 if "H100" in gpu_name else 400 if "A100" in gpu_name else 450 if "4090" in gpu_name else 72
            for i, ts in enumerate(times):
                u = utils[i]
                used = int(total * min(0.97, 0.08 + u / 110))
                sample = {
                    "kind": "gpu", "ts": _iso(ts), "index": index, "utilization_percent": round(u, 1),
                    "memory_util_percent": round(u * 0.62, 1), "memory_used_bytes": used, "memory_free_bytes": total - used,
                    "memory_total_bytes": total, "temperature_c": round(temps[i], 1),
                    "power_w": round(limit * (0.12 + 0.82 * u / 100), 1), "power_limit_w": float(limit),
                    "sm_clock_mhz": float(1980 if u > 20 else 345), "mem_clock_mhz": 2619.0 if "H100" in gpu_name else 1593.0,
                    "ecc_sbe_total": 2 if (name, index) == ("gpu-worker-h100-01", 2) else 0, "ecc_dbe_total": 0,
                    "xid_errors": 1 if (name, index) == ("gpu-worker-h100-01", 2) else 0,
                }
                if i == n - 1 and u > 5:
                    sample["processes"] = [{"pid": 4200 + index, "name": "python" if kind == "worker" else "vllm",
                                            "used_memory_bytes": used - 512 * 2**20}]
                samples.append(sample)
        if model and fate != "offline":
            t_in, t_out, lat, per_hour = _LLM_PROFILE.get(model, (1500, 300, 1500, 8))
            calls = int(per_hour * llm_hours)
            for _ in range(calls):
                ago = rng.uniform(silent_for, llm_hours * 3600)
                ts = now - timedelta(seconds=ago)
                # Busier in the (UTC) working day.
                if rng.random() > 0.55 + 0.45 * math.sin(math.pi * ((ts.hour - 6) % 24) / 24):
                    continue
                failed = rng.random() < (0.09 if provider == "anthropic" else 0.025)
                call = {
                    "kind": "llm", "ts": _iso(ts), "provider": provider, "model": model,
                    "tokens_in": int(t_in * rng.uniform(0.4, 1.6)), "tokens_out": 0 if failed else int(t_out * rng.uniform(0.3, 1.7)),
                    "latency_ms": round(lat * rng.lognormvariate(0, 0.45), 1), "status": "error" if failed else "ok",
                }
                if failed:
                    call["error_type"] = rng.choice(_ERRORS)
                elif rng.random() < 0.3:
                    call["tokens_cached"] = int(call["tokens_in"] * 0.6)
                samples.append(call)
        batches[ids[name]] = samples
    return batches


METRICS_TABLES = [
    "metrics_host_sample", "metrics_gpu_sample", "metrics_llm_call", "metrics_custom_sample", "metrics_host_1m",
    "metrics_host_1h", "metrics_gpu_1m", "metrics_gpu_1h", "metrics_llm_1m", "metrics_llm_1h", "metrics_rollup_pending",
]


def metrics_tables_truncate() -> None:
    from tests.conftest import metrics_tables_truncate as truncate

    truncate()


def seed_telemetry(ids: dict[str, str], **kwargs) -> dict[str, int]:
    """Ingest fleet_samples() through the service (as agents would) and roll them up.

    Publishes live events: call it through `in_thread` while a browser is running."""
    from apps.metrics import services

    counts = {"host": 0, "gpu": 0, "llm": 0, "custom": 0}
    for agent_id, samples in fleet_samples(ids, **kwargs).items():
        for i in range(0, len(samples), 5000):
            for k, v in services.metrics_ingest(agent_id=agent_id, samples=samples[i:i + 5000]).items():
                counts[k] += v
    services.metrics_rollup()
    return counts
