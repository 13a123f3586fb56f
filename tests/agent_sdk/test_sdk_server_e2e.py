"""The SDK against the real PulseGuard server: uvicorn, the real metrics API, PostgreSQL.

The server runs in its own process on the test database (tests/live.py), so this test
commits its data (transactional_db) and reads what the server wrote with plain SQL.
"""

from __future__ import annotations

import socket
import threading
import time
from types import SimpleNamespace

import pytest
from django.db import connection

from pulseguard_agent import (
    AgentRunner, Client, SimTiming, Simulator, Spool, Telemetry, TelemetryBuffer, TelemetryConfig, TelemetrySender,
)
from pulseguard_agent.integrations import openai as pg_openai
from tests.live import uvicorn_server


@pytest.fixture(scope="module")
def pulseguard_url(django_db_setup, django_db_blocker, tmp_path_factory):
    with uvicorn_server(tmp_path_factory.mktemp("server") / "server.log") as url:
        yield url


@pytest.fixture
def agent(pulseguard_url, transactional_db) -> Client:
    from apps.agents import services

    _, key = services.enrollment_key_create(name="sdk-e2e")
    client = Client(pulseguard_url, sleep=lambda s: None)
    client.register(key, "sdk-telemetry", host={}, model="gpt-4o-mini", provider="openai")
    yield client
    client.close()


def _rows(table: str, agent_id: str) -> int:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT count(*) FROM {table} WHERE agent_id = %s", [agent_id])  # noqa: S608 (fixed names)
        return cursor.fetchone()[0]


def _gpu(ts: float, index: int) -> dict:
    return {
        "kind": "gpu", "ts": ts, "index": index, "uuid": f"GPU-5f3c0000-0000-0000-0000-00000000000{index}",
        "utilization_percent": 97.0, "memory_util_percent": 61.0, "memory_used_bytes": 73014444032,
        "memory_free_bytes": 12884901888, "memory_total_bytes": 85899345920, "temperature_c": 74.0, "power_w": 612.5,
        "power_limit_w": 700.0, "sm_clock_mhz": 1980, "mem_clock_mhz": 2619, "energy_mj": 912837465,
        "ecc_sbe_total": 0, "ecc_dbe_total": 0,
        "processes": [{"pid": 4242, "name": "python", "used_memory_bytes": 7 * 10**10}],
    }


def test_samples_sent_by_the_sdk_are_stored_by_the_server(agent, tmp_path):
    now = time.time() - 30
    samples = [
        {"kind": "host", "ts": now, "cpu_percent": 41.5, "load1": 2.1, "load5": 1.9, "load15": 1.7,
         "memory_used_bytes": 21474836480, "memory_total_bytes": 68719476736, "disk_used_bytes": 412316860416,
         "disk_total_bytes": 1000204886016, "disk_read_bytes_per_s": 1048576.0, "disk_write_bytes_per_s": 524288.0,
         "net_rx_bytes_per_s": 2097152.0, "net_tx_bytes_per_s": 1048576.0},
        _gpu(now, 0), _gpu(now, 1),
    ]
    buffer = TelemetryBuffer()
    buffer.extend(samples)
    buffer.record_llm_call("openai", "gpt-4o-mini", tokens_in=1200, tokens_out=310, tokens_cached=1024,
                           latency_ms=1830, ttft_ms=420, session_id="conv-91", workflow_id="run-17", task_id="42")
    buffer.record_llm_call("anthropic", "claude-sonnet-4-5", tokens_in=900, latency_ms=30000, status="error",
                           error_type="timeout")
    buffer.record_metric("queue_depth", 17, labels={"queue": "inbox"})
    sender = TelemetrySender(agent, buffer, Spool(tmp_path / "spool"))

    assert sender.flush() == 6

    assert _rows("metrics_host_sample", agent.agent_id) == 1
    assert _rows("metrics_gpu_sample", agent.agent_id) == 2
    assert _rows("metrics_llm_call", agent.agent_id) == 2
    assert sender.spool.files() == [] and sender.stats["dropped_invalid"] == 0


def test_the_server_refusing_one_sample_costs_only_that_sample(agent, tmp_path):
    now = time.time() - 30
    buffer = TelemetryBuffer()
    buffer.extend([{"kind": "host", "ts": now, "cpu_percent": 12.0},
                   {"kind": "host", "ts": now + 1, "cpu_percent": 140.0},  # not a percentage
                   {"kind": "host", "ts": now + 2, "cpu_percent": 14.0}])
    sender = TelemetrySender(agent, buffer, Spool(tmp_path / "spool"))

    sender.flush()

    assert (sender.stats["sent"], sender.stats["dropped_invalid"]) == (2, 1)
    assert _rows("metrics_host_sample", agent.agent_id) == 2 and sender.spool.files() == []


def test_a_spooled_batch_reaches_the_database_when_the_server_is_back(agent, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        down_url = f"http://127.0.0.1:{s.getsockname()[1]}"
    offline = Client(down_url, token=agent.token, agent_id=agent.agent_id, max_attempts=1)
    buffer = TelemetryBuffer()
    buffer.extend([_gpu(time.time() - 60, 0)])
    TelemetrySender(offline, buffer, Spool(tmp_path / "spool")).flush()
    assert _rows("metrics_gpu_sample", agent.agent_id) == 0

    TelemetrySender(agent, TelemetryBuffer(), Spool(tmp_path / "spool")).flush()  # the next process

    assert _rows("metrics_gpu_sample", agent.agent_id) == 1


def test_calls_through_an_instrumented_openai_client_reach_the_database(agent, tmp_path):
    # A stand-in for the openai SDK's client and ChatCompletion (the package is not installed).
    usage = SimpleNamespace(prompt_tokens=2000, completion_tokens=150,
                            prompt_tokens_details=SimpleNamespace(cached_tokens=1024))
    completions = SimpleNamespace(create=lambda **kwargs: SimpleNamespace(model="gpt-4o-mini-2024-07-18", usage=usage))
    llm_client = pg_openai.instrument(SimpleNamespace(chat=SimpleNamespace(completions=completions)),
                                      buffer := TelemetryBuffer())

    llm_client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    TelemetrySender(agent, buffer, Spool(tmp_path / "spool")).flush()

    with connection.cursor() as cursor:
        cursor.execute("SELECT provider, model, tokens_in, tokens_out, tokens_cached, ok, cost_source, cost_usd "
                       "FROM metrics_llm_call WHERE agent_id = %s", [agent.agent_id])
        (row,) = cursor.fetchall()
    assert row[:7] == ("openai", "gpt-4o-mini", 2000, 150, 1024, True, "price") and row[7] > 0  # priced by the server


def test_a_runner_sends_this_machines_samples_and_they_are_stored(agent, tmp_path):
    settings = TelemetryConfig(metrics_interval_s=0.1, flush_interval_s=0.1, spool_dir=str(tmp_path))
    telemetry = Telemetry.from_config(agent, settings, agent="sdk-telemetry", buffer=TelemetryBuffer())
    runner = AgentRunner(agent, interval_s=0.2, telemetry=telemetry)
    runner.record_llm_call("openai", "gpt-4o-mini", tokens_in=10, tokens_out=2, latency_ms=350)
    thread = threading.Thread(target=runner.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while _rows("metrics_host_sample", agent.agent_id) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    runner.stop()
    thread.join(10)

    assert _rows("metrics_host_sample", agent.agent_id) >= 3 and _rows("metrics_llm_call", agent.agent_id) == 1
    assert telemetry.sender.stats["dropped_invalid"] == 0 and telemetry.spool.files() == []


def test_the_simulated_fleets_telemetry_is_accepted_by_the_server(pulseguard_url, transactional_db):
    from apps.agents import services

    _, key = services.enrollment_key_create(name="sim-e2e")
    sim = Simulator(pulseguard_url, key, agents=8, prefix="e2e", fail_rate=0, silent_rate=0, interval=0.2,
                    metrics_interval=0.1, seed=3, timing=SimTiming(start_spread_s=0.05, stall_probability=0.0))

    sim.run(2.0)

    stats = sim.stats.snapshot()
    assert stats["telemetry_sent"] > 50 and "telemetry_dropped_invalid" not in stats, stats
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM metrics_gpu_sample g JOIN agents_agent a ON a.id = g.agent_id "
                       "WHERE a.name = 'e2e-gpu-infer-07'")
        assert cursor.fetchone()[0] > 0
