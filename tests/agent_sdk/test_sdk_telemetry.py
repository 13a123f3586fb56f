"""Telemetry samples, the buffer, `record_llm_call` and `Client.send_metrics` against a real HTTP server."""

import gzip
import json
import math
import threading
import time
from datetime import datetime, timezone

import pytest

import pulseguard_agent
from pulseguard_agent import Client, TelemetryBuffer, TelemetryConfig, default_buffer
from pulseguard_agent.config import parse_size
from pulseguard_agent.samples import decode_batch, encode_batch, llm_call_sample, timestamp


@pytest.fixture
def empty_default_buffer():
    default_buffer().take()
    yield default_buffer()
    default_buffer().take()


def _registered(server, name="metrics-client") -> Client:
    client = Client(server.url, sleep=lambda s: None)
    client.register(server.key, name, host={})
    return client


def test_send_metrics_compresses_and_splits_into_batches_of_at_most_5000(server):
    client = _registered(server)
    now = time.time()
    samples = [{"kind": "host", "ts": now - 60 + i / 1000, "cpu_percent": 5.0} for i in range(5001)]
    samples.append({"kind": "llm", "ts": now, "provider": "anthropic", "model": "claude-sonnet-4-5", "tokens_in": 900,
                    "latency_ms": 30000.0, "status": "error", "error_type": "timeout"})

    answer = client.send_metrics(samples)

    assert answer == {"accepted": 5002, "by_kind": {"host": 5001, "llm": 1}}
    requests = server.to("metrics")
    assert [len(r.body["samples"]) for r in requests] == [5000, 2]
    assert all(r.headers["Content-Encoding"] == "gzip" and r.path == f"/api/v1/agents/{client.agent_id}/metrics"
               for r in requests)
    assert server.samples[client.agent_id] == samples


def test_send_metrics_leaves_out_figures_json_cannot_carry(server):
    client = _registered(server)

    client.send_metrics([{"kind": "gpu", "ts": time.time(), "index": 0, "power_w": math.nan, "temperature_c": math.inf,
                          "utilization_percent": 50.0, "uuid": None}])

    assert server.samples[client.agent_id][0] == {"kind": "gpu", "ts": pytest.approx(time.time(), abs=5), "index": 0,
                                                  "utilization_percent": 50.0}


@pytest.mark.parametrize("bad", [{"kind": "disk"}, {"kind": "host"}, {"kind": "gpu", "ts": 1.0},
                                 {"kind": "llm", "ts": 1.0, "provider": "openai"}])
def test_send_metrics_refuses_something_that_is_not_a_sample_before_sending(server, bad):
    client = _registered(server)

    with pytest.raises(ValueError):
        client.send_metrics([{"kind": "host", "ts": time.time()}, bad])

    assert server.to("metrics") == []


def test_a_refused_batch_raises_with_the_bad_samples_named(server):
    client = _registered(server)

    with pytest.raises(pulseguard_agent.PulseGuardError) as error:
        client.send_metrics([{"kind": "host", "ts": time.time(), "cpu_percent": 140.0}])

    assert (error.value.status, error.value.code) == (400, "invalid_samples")
    assert error.value.samples == [{"index": 0, "field": "cpu_percent", "reason": "out of range"}]


def test_batches_encode_to_the_same_bytes_and_decode_back():
    samples = [{"kind": "custom", "ts": 1.5, "name": "queue_depth", "value": 17}]

    payload = encode_batch(samples)

    assert payload == encode_batch(samples) and json.loads(gzip.decompress(payload)) == {"samples": samples}
    assert decode_batch(payload) == samples
    with pytest.raises(ValueError):
        decode_batch(b"not gzip")


def test_an_llm_call_sample_has_the_fields_of_the_contract():
    sample = llm_call_sample("openai", "gpt-4o-mini", tokens_in=1200, tokens_out=310, tokens_cached=1024,
                             latency_ms=1830, ttft_ms=420, session_id="conv-91", workflow_id="run-17", task_id=42,
                             ts=datetime(2026, 11, 22, 10, 0, 1, 250000))

    assert sample == {
        "kind": "llm", "ts": datetime(2026, 11, 22, 10, 0, 1, 250000, tzinfo=timezone.utc).timestamp(),
        "provider": "openai", "model": "gpt-4o-mini", "operation": "chat", "tokens_in": 1200, "tokens_out": 310,
        "tokens_cached": 1024, "status": "ok", "latency_ms": 1830.0, "ttft_ms": 420.0, "session_id": "conv-91",
        "workflow_id": "run-17", "task_id": "42",
    }


@pytest.mark.parametrize("fields, reason", [
    ({"provider": ""}, "provider"),
    ({"model": "m" * 129}, "model"),
    ({"tokens_in": -1}, "tokens_in"),
    ({"tokens_out": 1.5}, "tokens_out"),
    ({"latency_ms": float("nan")}, "latency_ms"),
    ({"status": "failed"}, "status"),
    ({"error_type": "timeout"}, "only with status='error'"),
    ({"status": "error", "error_type": "Rate Limit"}, "lower_snake_case"),
    ({"session_id": "s" * 129}, "session_id"),
])
def test_record_llm_call_refuses_what_the_server_would_refuse(fields, reason):
    arguments = {"provider": "openai", "model": "gpt-4o", **fields}

    with pytest.raises(ValueError, match=reason):
        TelemetryBuffer().record_llm_call(**arguments)


def test_timestamps_are_unix_seconds_or_the_string_given():
    assert timestamp(datetime(2026, 1, 1, tzinfo=timezone.utc)) == 1767225600.0
    assert timestamp(datetime(2026, 1, 1)) == 1767225600.0  # naive is UTC
    assert timestamp("2026-11-22T10:00:00Z") == "2026-11-22T10:00:00Z"
    assert abs(timestamp() - time.time()) < 1
    with pytest.raises(ValueError):
        timestamp(math.inf)


def test_the_buffer_drops_its_oldest_samples_past_its_bound_and_counts_them(caplog):
    buffer = TelemetryBuffer(max_samples=3, flush_at=2)

    buffer.extend({"kind": "custom", "ts": float(i), "name": "n", "value": i} for i in range(5))

    assert [s["value"] for s in buffer.take()] == [2, 3, 4]
    assert buffer.dropped == 2 and "oldest dropped" in caplog.text


def test_the_buffer_wakes_its_sender_once_enough_samples_wait():
    buffer, ready = TelemetryBuffer(flush_at=2), threading.Event()
    buffer.notify(ready)

    buffer.record_metric("queue_depth", 1, labels={"queue": "inbox"})
    assert not ready.is_set()
    buffer.record_metric("queue_depth", 2)

    assert ready.is_set() and len(buffer.take(1)) == 1 and len(buffer) == 1


def test_module_level_record_llm_call_goes_to_the_process_wide_buffer(empty_default_buffer):
    pulseguard_agent.record_llm_call("anthropic", "claude-sonnet-4-5", tokens_in=900, latency_ms=30000, status="error",
                                     error_type="timeout")

    (sample,) = empty_default_buffer.take()
    assert (sample["provider"], sample["status"], sample["error_type"], sample["tokens_out"]) == (
        "anthropic", "error", "timeout", 0)


def test_telemetry_settings_come_from_the_environment():
    env = {"PULSEGUARD_METRICS_INTERVAL": "5", "PULSEGUARD_FLUSH_INTERVAL": "2.5", "PULSEGUARD_FLUSH_AT": "500",
           "PULSEGUARD_SPOOL_DIR": "/var/spool/pg", "PULSEGUARD_SPOOL_MAX_BYTES": "16MiB", "PULSEGUARD_TELEMETRY": "on"}

    settings = TelemetryConfig.from_env(env, flush_at=100)

    assert (settings.metrics_interval_s, settings.flush_interval_s, settings.flush_at) == (5.0, 2.5, 100)
    assert settings.spool_max_bytes == 16 * 1024**2 and settings.enabled
    assert str(settings.spool_path("coder-01")) == "/var/spool/pg/coder-01"


def test_the_default_spool_is_in_the_users_state_directory():
    assert TelemetryConfig.from_env({"HOME": "/home/a"}).spool_dir.endswith("/.local/state/pulseguard-agent/spool")
    assert TelemetryConfig.from_env({"XDG_STATE_HOME": "/st"}).spool_dir == "/st/pulseguard-agent/spool"
    assert TelemetryConfig.from_env({}).spool_max_bytes == 64 * 1024**2


@pytest.mark.parametrize("env", [{"PULSEGUARD_METRICS_INTERVAL": "soon"}, {"PULSEGUARD_SPOOL_MAX_BYTES": "lots"},
                                 {"PULSEGUARD_FLUSH_INTERVAL": "0"}, {"PULSEGUARD_TELEMETRY": "maybe"}])
def test_bad_telemetry_settings_fail_at_startup(env):
    with pytest.raises(ValueError):
        TelemetryConfig.from_env(env)


def test_sizes_read_with_or_without_a_unit():
    assert parse_size("67108864", "X") == parse_size("64MiB", "X") == parse_size("64 m", "X") == 64 * 1024**2
    assert parse_size("512k", "X") == 512 * 1024
