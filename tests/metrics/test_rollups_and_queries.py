"""Rollups are exact and idempotent; queries pick the coarsest resolution that answers."""

from datetime import datetime, timedelta
from datetime import timezone as dt_timezone

import pytest
from django.utils import timezone

from apps.metrics import partitions, selectors, services
from apps.metrics.schema import FLEET_ID
from tests.metrics.conftest import count, rows

pytestmark = pytest.mark.django_db


def _hour_ago_aligned():
    """The start of a whole hour two hours back, so buckets are easy to reason about."""
    now = timezone.now()
    return now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=2)


def _host(ts, cpu, **more):
    return {"kind": "host", "ts": ts.isoformat(), "cpu_percent": cpu, **more}


def _fill(agent, start, minutes, cpu_of):
    """Samples every 10 s for `minutes` minutes; cpu_of(i) gives each sample's value."""
    samples = [_host(start + timedelta(seconds=10 * i), cpu_of(i)) for i in range(minutes * 6)]
    services.metrics_ingest(agent_id=agent.pk, samples=samples)


def test_minutes_and_hours_are_rolled_up_with_a_fleet_row(two_agents):
    (a, _), (b, _) = two_agents
    start = _hour_ago_aligned()
    _fill(a, start, 90, lambda i: 10.0 + (i % 6))  # 10..15 each minute: avg 12.5
    _fill(b, start, 90, lambda i: 50.0)
    done = services.metrics_rollup()
    assert done["host"] == 90
    assert count("metrics_rollup_pending") == 0
    (first,) = rows("SELECT n, cpu_percent_avg, cpu_percent_min, cpu_percent_max FROM metrics_host_1m "
                    "WHERE agent_id = %s AND bucket = %s", [a.pk, start])
    assert first == (6, 12.5, 10.0, 15.0)
    (fleet,) = rows("SELECT n, cpu_percent_avg, cpu_percent_min, cpu_percent_max FROM metrics_host_1m "
                    "WHERE agent_id = %s AND bucket = %s", [FLEET_ID, start])
    assert fleet == (12, 31.25, 10.0, 50.0)
    hours = rows("SELECT bucket, n, cpu_percent_avg FROM metrics_host_1h WHERE agent_id = %s ORDER BY bucket", [a.pk])
    assert hours == [(start, 360, 12.5), (start + timedelta(hours=1), 180, 12.5)]


def test_rolling_up_twice_or_late_data_gives_the_same_result(two_agents):
    (a, _), _ = two_agents
    start = _hour_ago_aligned()
    _fill(a, start, 2, lambda i: 20.0)
    services.metrics_rollup()
    first = rows("SELECT * FROM metrics_host_1m ORDER BY agent_id, bucket")
    services.metrics_rollup()  # nothing pending: nothing changes
    assert rows("SELECT * FROM metrics_host_1m ORDER BY agent_id, bucket") == first
    # A sample for an already rolled-up minute arrives late (an agent's spool replays).
    services.metrics_ingest(agent_id=a.pk, samples=[_host(start + timedelta(seconds=5), 80.0)])
    services.metrics_rollup()
    (row,) = rows("SELECT n, cpu_percent_avg, cpu_percent_max FROM metrics_host_1m WHERE agent_id = %s AND bucket = %s",
                  [a.pk, start])
    assert row == (7, pytest.approx((6 * 20 + 80) / 7), 80.0)
    (hour,) = rows("SELECT n FROM metrics_host_1h WHERE agent_id = %s", [a.pk])
    assert hour == (13,)


def test_llm_rollups_keep_sums_and_a_latency_histogram(two_agents):
    (a, _), (b, _) = two_agents
    start = _hour_ago_aligned()
    calls = [{"kind": "llm", "ts": (start + timedelta(seconds=i)).isoformat(), "provider": "openai", "model": "gpt-4o",
              "tokens_in": 100, "tokens_out": 10, "latency_ms": 100.0 * (i + 1),
              **({"status": "error", "error_type": "timeout"} if i == 0 else {})} for i in range(20)]
    services.metrics_ingest(agent_id=a.pk, samples=calls)
    services.metrics_ingest(agent_id=b.pk, samples=[{**calls[1], "model": "gpt-4o-mini"}])
    services.metrics_rollup()
    usage = selectors.llm_usage(start=start, end=start + timedelta(hours=1), group_by="model")
    by_key = {g["key"]: g for g in usage["groups"]}
    assert set(by_key) == {"openai/gpt-4o", "openai/gpt-4o-mini"}
    g = by_key["openai/gpt-4o"]
    assert (g["calls"], g["errors"], g["tokens_in"], g["tokens_out"]) == (20, 1, 2000, 200)
    assert g["error_rate"] == 0.05
    assert g["latency_avg_ms"] == 1050.0
    # Exact p50 is 1,050 ms and p95 1,950 ms; the histogram estimate lands in the right bucket.
    assert 1000 <= g["latency_p50_ms"] <= 1500
    assert 1500 <= g["latency_p95_ms"] <= 2000
    assert g["cost_usd"] == pytest.approx(20 * (100 * 2.5 + 10 * 10) / 1e6)
    assert usage["totals"]["calls"] == 21
    by_agent = selectors.llm_usage(start=start, end=start + timedelta(hours=1), group_by="agent")
    assert {g["label"]: g["calls"] for g in by_agent["groups"]} == {"trainer-1": 20, "chatbot-1": 1}
    by_day = selectors.llm_usage(start=start, end=start + timedelta(hours=1), group_by="day")
    assert [g["calls"] for g in by_day["groups"]] == [21]


def test_series_query_picks_the_resolution_and_buckets_values(two_agents):
    (a, _), (b, _) = two_agents
    start = _hour_ago_aligned()
    _fill(a, start, 120, lambda i: 10.0 if i < 360 else 30.0)
    _fill(b, start, 120, lambda i: 50.0)
    services.metrics_rollup()
    end = start + timedelta(hours=2)

    hourly = selectors.series_query(metric="host.cpu_percent", start=start, end=end, step=3600)
    assert hourly.resolution == "1h"
    assert {s.agent_name: [p[1] for p in s.points] for s in hourly.series} == {
        "trainer-1": [10.0, 30.0], "chatbot-1": [50.0, 50.0]}

    fleet = selectors.series_query(metric="host.cpu_percent", start=start, end=end, step=3600, group_by="fleet")
    assert [p[1] for p in fleet.series[0].points] == [30.0, 40.0]
    assert fleet.series[0].agent_name == "fleet"

    peak = selectors.series_query(metric="host.cpu_percent", start=start, end=end, step=1800, agg="max",
                                  labels={"team": "ml"})
    assert peak.resolution == "1m"
    assert [p[1] for p in peak.series[0].points] == [10.0, 10.0, 30.0, 30.0]
    assert [s.agent_name for s in peak.series] == ["trainer-1"]

    raw = selectors.series_query(metric="host.cpu_percent", start=start, end=start + timedelta(minutes=1), step=30,
                                 agent_ids=[a.pk])
    assert raw.resolution == "raw"
    assert raw.series[0].points == [[int(start.timestamp()), 10.0], [int(start.timestamp()) + 30, 10.0]]

    # The same answer from the rollups and from raw rows.
    from_raw = selectors.series_query(metric="host.cpu_percent", start=start, end=end, step=1770, group_by="fleet")
    assert from_raw.resolution == "raw"


def test_gpu_series_are_per_device_and_empty_buckets_are_null(two_agents):
    (a, _), _ = two_agents
    start = _hour_ago_aligned()
    services.metrics_ingest(agent_id=a.pk, samples=[
        {"kind": "gpu", "ts": (start + timedelta(minutes=m)).isoformat(), "index": i, "utilization_percent": 10.0 * (i + 1)}
        for m in (0, 2) for i in range(2)
    ])
    services.metrics_rollup()
    result = selectors.series_query(metric="DCGM_FI_DEV_GPU_UTIL", start=start, end=start + timedelta(minutes=3), step=60)
    assert [(s.device, [p[1] for p in s.points]) for s in result.series] == [(0, [10.0, None, 10.0]), (1, [20.0, None, 20.0])]
    alias = selectors.series_query(metric="gpu.utilization_percent", start=start, end=start + timedelta(minutes=3), step=60,
                                   group_by="fleet")
    assert [p[1] for p in alias.series[0].points] == [15.0, None, 15.0]


@pytest.mark.parametrize("kwargs, code", [
    ({"metric": "host.nope"}, "unknown_metric"),
    ({"metric": "host.cpu_percent", "agg": "sum"}, "invalid_agg"),
    ({"metric": "host.cpu_percent", "step": 1, "start": datetime(2026, 1, 1, tzinfo=dt_timezone.utc)}, "too_many_points"),
    ({"metric": "host.cpu_percent", "start": timezone.now() + timedelta(hours=1)}, "invalid_range"),
])
def test_bad_queries_are_refused(kwargs, code):
    from apps.core.errors import ApplicationError

    with pytest.raises(ApplicationError) as exc:
        selectors.series_query(**kwargs)
    assert exc.value.code == code


def test_partitions_are_made_ahead_and_dropped_whole_when_expired(settings):
    today = timezone.now().date()
    later = today + timedelta(days=2)
    created = partitions.partitions_ensure(today=later)
    assert f"metrics_host_sample_p{(later + timedelta(days=3)):%Y%m%d}" in created
    settings.PULSEGUARD_RETENTION_RAW_DAYS = 1
    dropped = partitions.partitions_drop_expired(today=today)
    oldest_kept = today - timedelta(days=1)
    assert f"metrics_host_sample_p{(today - timedelta(days=2)):%Y%m%d}" in dropped
    assert not any(name.endswith(f"{oldest_kept:%Y%m%d}") for name in dropped)
    assert not any(name.startswith("metrics_host_1h") for name in dropped)


def test_tokens_per_minute_and_fleet_gpus(two_agents, enrollment_key):
    from tests.conftest import register

    (a, _), _ = two_agents
    now = timezone.now()
    services.metrics_ingest(agent_id=a.pk, samples=[
        {"kind": "llm", "ts": (now - timedelta(seconds=s)).isoformat(), "provider": "openai", "model": "gpt-4o",
         "tokens_in": 400, "tokens_out": 100} for s in (10, 70, 130)
    ])
    services.metrics_rollup()
    assert selectors.tokens_per_minute(agent_ids=[a.pk]) == {str(a.pk): 300.0}
    gpu_box, _ = register(enrollment_key, "gpu-box", host={"hostname": "g", "gpus": [
        {"index": 0, "name": "NVIDIA H100", "uuid": "GPU-1", "memory_total_bytes": 80 * 2**30},
        {"index": 1, "name": "NVIDIA H100", "uuid": "GPU-2", "memory_total_bytes": 80 * 2**30}]})
    services.metrics_ingest(agent_id=gpu_box.pk, samples=[
        {"kind": "gpu", "ts": now.isoformat(), "index": 1, "utilization_percent": 77.0}])
    devices = selectors.fleet_gpus()
    assert [(d.agent_name, d.index, d.reading.get("utilization_percent")) for d in devices] == [
        ("gpu-box", 0, None), ("gpu-box", 1, 77.0)]
