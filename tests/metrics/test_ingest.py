"""Batch ingest: all or nothing, every bad sample named, rows in the partitioned tables."""

import gzip
import json
import math
from datetime import timedelta

import pytest
from django.utils import timezone

from apps.agents.models import Agent
from apps.metrics import services
from apps.metrics.schema import LATENCY_BUCKETS
from tests.conftest import agent_client
from tests.metrics.conftest import count, iso, minutes_ago, rows

pytestmark = pytest.mark.django_db


def host(ts, **values):
    return {"kind": "host", "ts": iso(ts), "cpu_percent": 40.0, "memory_used_bytes": 8 * 2**30,
            "memory_total_bytes": 32 * 2**30, **values}


def gpu(ts, index=0, **values):
    return {"kind": "gpu", "ts": iso(ts), "index": index, "utilization_percent": 90.0, "temperature_c": 71.0,
            "memory_used_bytes": 60 * 2**30, "memory_total_bytes": 80 * 2**30, "power_w": 550.5, **values}


def llm(ts, **values):
    return {"kind": "llm", "ts": iso(ts), "provider": "openai", "model": "gpt-4o-mini", "tokens_in": 1000,
            "tokens_out": 200, "latency_ms": 900.0, **values}


def url(agent):
    return f"/api/v1/agents/{agent.pk}/metrics"


def test_a_mixed_batch_is_written_to_every_table(agent_and_token):
    agent, token = agent_and_token
    now = minutes_ago(0)
    samples = [host(now), gpu(now, 0), gpu(now, 1, utilization_percent=12.5),
               llm(now, session_id="conv-1", workflow_id="run-9", task_id="42"),
               {"kind": "custom", "ts": now.timestamp(), "name": "queue.depth", "type": "gauge", "value": 17,
                "labels": {"queue": "inbox"}}]
    r = agent_client(token).post(url(agent), samples and {"samples": samples}, format="json")
    assert r.status_code == 200, r.content
    assert r.json() == {"accepted": 5, "by_kind": {"host": 1, "gpu": 2, "llm": 1, "custom": 1}}
    assert count("metrics_host_sample", agent_id=agent.pk) == 1
    assert rows("SELECT gpu_index, utilization_percent FROM metrics_gpu_sample ORDER BY gpu_index") == [(0, 90.0), (1, 12.5)]
    (call,) = rows("SELECT model, tokens_in, ok, cost_source, session_id, workflow_id, task_id FROM metrics_llm_call")
    assert call == ("gpt-4o-mini", 1000, True, "price", "conv-1", "run-9", "42")
    assert rows("SELECT name, value, labels::text FROM metrics_custom_sample") == [("queue.depth", 17.0, '{"queue": "inbox"}')]
    # The minutes are marked for the rollup job in the same transaction.
    assert {r[0] for r in rows("SELECT source FROM metrics_rollup_pending")} == {"host", "gpu", "llm"}
    # The agent's row shows the latest readings, as a heartbeat would.
    readings = Agent.objects.get(pk=agent.pk).readings
    assert readings["cpu_percent"] == 40.0
    assert [g["utilization_percent"] for g in readings["gpus"]] == [90.0, 12.5]


def test_gzip_bodies_are_accepted(agent_and_token):
    agent, token = agent_and_token
    body = gzip.compress(json.dumps({"samples": [host(minutes_ago(1)) for _ in range(3)]}).encode())
    r = agent_client(token).generic("POST", url(agent), body, content_type="application/json",
                                    HTTP_CONTENT_ENCODING="gzip")
    assert r.status_code == 200, r.content
    assert count("metrics_host_sample") == 3


def test_a_gzip_bomb_is_refused_before_it_expands(agent_and_token, settings):
    settings.PULSEGUARD_MAX_METRICS_BODY_BYTES = 64 * 1024
    agent, token = agent_and_token
    body = gzip.compress(b'{"samples": [' + b" " * (10 * 2**20) + b"]}")
    assert len(body) < 64 * 1024
    r = agent_client(token).generic("POST", url(agent), body, content_type="application/json",
                                    HTTP_CONTENT_ENCODING="gzip")
    assert r.status_code == 413
    assert r.json()["error"]["code"] == "body_too_large"


def test_one_bad_sample_rejects_the_batch_and_every_problem_is_listed(agent_and_token):
    agent, token = agent_and_token
    now = minutes_ago(0)
    samples = [
        host(now),
        host(now, cpu_percent="high"),
        gpu(now, temperature_c=250),
        {"kind": "disk", "ts": iso(now)},
        host(now + timedelta(hours=2)),
        host(now - timedelta(days=30)),
        llm(now, colour="blue"),
        {"kind": "llm", "ts": iso(now)},
        gpu(now, index=True),
    ]
    body = json.dumps({"samples": samples})
    r = agent_client(token).generic("POST", url(agent), body, content_type="application/json")
    assert r.status_code == 400
    error = r.json()["error"]
    assert error["code"] == "invalid_samples"
    problems = {(p["index"], p["field"]) for p in error["fields"]["samples"]}
    assert problems == {
        (1, "cpu_percent"), (2, "temperature_c"), (3, "kind"), (4, "ts"), (5, "ts"), (6, "colour"),
        (7, "provider"), (7, "model"), (8, "index"),
    }
    reasons = {(p["index"], p["field"]): p["reason"] for p in error["fields"]["samples"]}
    assert reasons[(2, "temperature_c")] == "must be at most 200"
    assert "future" in reasons[(4, "ts")]
    assert "retention" in reasons[(5, "ts")]
    assert count("metrics_host_sample") == count("metrics_gpu_sample") == count("metrics_llm_call") == 0
    assert count("metrics_rollup_pending") == 0


def test_nan_and_infinities_are_refused(agent_and_token):
    from apps.core.errors import ApplicationError

    agent, token = agent_and_token
    # Not JSON at all on the wire...
    r = agent_client(token).generic("POST", url(agent), '{"samples": [{"kind": "host", "cpu_percent": NaN}]}',
                                    content_type="application/json")
    assert r.status_code == 400 and r.json()["error"]["code"] == "malformed_json"
    # ...and refused by the service whatever parsed them.
    with pytest.raises(ApplicationError) as exc:
        services.metrics_ingest(agent_id=agent.pk, samples=[host(minutes_ago(0), cpu_percent=math.nan),
                                                             gpu(minutes_ago(0), power_w=math.inf)])
    assert [p["reason"] for p in exc.value.fields["samples"]] == ["must be a finite number"] * 2
    assert count("metrics_host_sample") == 0


@pytest.mark.parametrize("body, code, status", [
    (b"not json", "malformed_json", 400),
    (b"[1, 2]", "invalid_samples", 400),
    (b'{"samples": [], "agent": "x"}', "invalid_samples", 400),
    (b'{"samples": {"kind": "host"}}', "invalid_samples", 400),
])
def test_malformed_bodies_get_a_clear_error(agent_and_token, body, code, status):
    agent, token = agent_and_token
    r = agent_client(token).generic("POST", url(agent), body, content_type="application/json")
    assert r.status_code == status
    assert r.json()["error"]["code"] == code


def test_an_oversized_batch_is_refused_whole(agent_and_token, settings):
    settings.PULSEGUARD_METRICS_MAX_BATCH = 10
    agent, token = agent_and_token
    r = agent_client(token).post(url(agent), {"samples": [host(minutes_ago(1))] * 11}, format="json")
    assert r.status_code == 413
    assert r.json()["error"]["code"] == "batch_too_large"
    assert count("metrics_host_sample") == 0


def test_an_agent_cannot_send_samples_for_another(enrollment_key):
    from tests.conftest import register

    mine, my_token = register(enrollment_key, "mine")
    theirs, _ = register(enrollment_key, "theirs")
    r = agent_client(my_token).post(url(theirs), {"samples": [host(minutes_ago(1))]}, format="json")
    assert r.status_code == 403
    r = agent_client("pga_not-a-token").post(url(mine), {"samples": [host(minutes_ago(1))]}, format="json")
    assert r.status_code == 401
    assert count("metrics_host_sample") == 0


def test_operator_tokens_cannot_ingest(agent_and_token, operator_api):
    agent, _ = agent_and_token
    r = operator_api.post(url(agent), {"samples": [host(minutes_ago(1))]}, format="json")
    assert r.status_code in (401, 403)
    assert count("metrics_host_sample") == 0


def test_cost_is_priced_at_the_calls_time_unless_the_agent_sent_one(agent_and_token):
    from apps.metrics.models import ModelPrice

    agent, _ = agent_and_token
    now = minutes_ago(0)
    # A price cut an hour ago: a call from two hours ago keeps the old price.
    ModelPrice.objects.create(provider="openai", model="gpt-4o-mini", input_per_mtok="0.10", output_per_mtok="0.40",
                              cached_input_per_mtok="0.05", valid_from=now - timedelta(hours=1))
    services.metrics_ingest(agent_id=agent.pk, samples=[
        llm(now - timedelta(hours=2), tokens_in=1_000_000, tokens_out=0, tokens_cached=0),
        llm(now, tokens_in=1_000_000, tokens_out=1_000_000, tokens_cached=500_000),
        llm(now, model="gpt-4o-mini-2024-07-18", tokens_in=1_000_000, tokens_out=0, tokens_cached=0),
        llm(now, cost_usd=1.5),
        llm(now, provider="acme", model="mystery-1"),
        llm(now, provider="vllm", model="llama-3.1-70b-instruct", tokens_in=1_000_000, tokens_out=0),
    ])
    got = rows("SELECT model, round(cost_usd::numeric, 6)::float8, cost_source FROM metrics_llm_call")
    assert sorted(got, key=str) == sorted([
        ("gpt-4o-mini", 0.15, "price"),  # seeded list price, in force two hours ago
        ("gpt-4o-mini", round(0.5 * 0.10 + 0.5 * 0.05 + 1 * 0.40, 6), "price"),
        ("gpt-4o-mini-2024-07-18", 0.10, "price"),  # a dated variant priced as its family
        ("gpt-4o-mini", 1.5, "agent"),
        ("mystery-1", None, "unpriced"),
        ("llama-3.1-70b-instruct", 0.88, "price"),  # open model: any provider
    ], key=str)


def test_heartbeat_readings_are_stored_as_samples(agent_and_token):
    from apps.agents import services as agent_services

    agent, token = agent_and_token
    agent_services.agent_heartbeat_record(agent_id=agent.pk, token=token, state="busy", readings={
        "cpu_percent": 55.0, "load1": 1.5, "memory_used_bytes": 2**30, "memory_total_bytes": 2**32,
        "gpus": [{"index": 0, "utilization_percent": 80.0, "temperature_c": 66.0}],
    })
    assert rows("SELECT cpu_percent, load1 FROM metrics_host_sample WHERE agent_id = %s", [agent.pk]) == [(55.0, 1.5)]
    assert rows("SELECT gpu_index, utilization_percent, temperature_c FROM metrics_gpu_sample") == [(0, 80.0, 66.0)]
    # A heartbeat without readings writes no sample; a refused one writes nothing at all.
    agent_services.agent_heartbeat_record(agent_id=agent.pk, token=token, state="idle")
    assert count("metrics_host_sample") == 1


def test_latency_histogram_has_a_bucket_for_every_edge():
    assert LATENCY_BUCKETS == 18


def test_ingest_creates_a_missing_partition_and_retries(agent_and_token):
    """After a long outage the beat job may not have made today's partition yet."""
    agent, _ = agent_and_token
    today = timezone.now().strftime("%Y%m%d")
    with __import__("django.db").db.connection.cursor() as cur:
        cur.execute(f"DROP TABLE metrics_host_sample_p{today}")
    services.metrics_ingest(agent_id=agent.pk, samples=[host(minutes_ago(0))])
    assert count("metrics_host_sample") == 1


def test_the_agent_row_keeps_device_fields_a_sample_omits(agent_and_token):
    agent, _ = agent_and_token
    t0 = minutes_ago(2)
    services.metrics_ingest(agent_id=agent.pk, samples=[gpu(t0, 0, sm_clock_mhz=1980.0, ecc_sbe_total=2)])
    t1 = minutes_ago(1)
    services.metrics_ingest(agent_id=agent.pk, samples=[gpu(t1, 0, utilization_percent=10.0)])
    readings = Agent.objects.get(pk=agent.pk).readings
    (device,) = readings["gpus"]
    assert (device["utilization_percent"], device["sm_clock_mhz"], device["ecc_sbe_total"]) == (10.0, 1980.0, 2)
    assert readings["ts"] == t1.isoformat()  # a GPU-only batch moves the time too
