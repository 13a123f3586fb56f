"""The telemetry pages: agent tabs, fleet GPUs, LLM usage and cost, fleet rows' figures."""

import json
import re
from datetime import timedelta
from urllib.parse import parse_qs, urlparse

import pytest
from django.utils import timezone

from apps.agents.models import Agent
from apps.dashboard import charts, render, telemetry
from apps.metrics import selectors, services
from apps.metrics.pricing import prices_forget
from tests.conftest import register

pytestmark = pytest.mark.django_db

GiB = 2**30
H100 = [{"index": i, "name": "NVIDIA H100 80GB HBM3", "uuid": f"GPU-{i}", "memory_total_bytes": 80 * GiB} for i in range(2)]


@pytest.fixture(autouse=True)
def _fast_passwords(settings):
    # Users are made for every test; Django's real hasher costs ~0.5 s of CPU each.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def _fresh_prices():
    prices_forget()
    yield
    prices_forget()


def ago(**kw):
    return timezone.now().replace(microsecond=0) - timedelta(**kw)


def host(ts, cpu=40.0, **extra):
    return {"kind": "host", "ts": ts.isoformat(), "cpu_percent": cpu, "load1": 1.5, "memory_used_bytes": 8 * GiB,
            "memory_total_bytes": 32 * GiB, **extra}


def gpu(ts, index, util, temp, **extra):
    return {"kind": "gpu", "ts": ts.isoformat(), "index": index, "utilization_percent": util, "temperature_c": temp,
            "memory_used_bytes": 40 * GiB, "memory_total_bytes": 80 * GiB, "power_w": 500.0, "power_limit_w": 700.0,
            "sm_clock_mhz": 1980.0, "ecc_sbe_total": 0, "ecc_dbe_total": 0, "xid_errors": 0, **extra}


def llm(ts, model="gpt-4o-mini", provider="openai", **extra):
    return {"kind": "llm", "ts": ts.isoformat(), "provider": provider, "model": model, "tokens_in": 1000,
            "tokens_out": 200, "latency_ms": 900.0, **extra}


@pytest.fixture
def gpu_agent(enrollment_key):
    agent, _ = register(enrollment_key, "trainer-1", kind="worker", model="", provider="", labels={"pool": "train"},
                        host={"hostname": "trainer-1", "cpu_count": 64, "memory_total_bytes": 512 * GiB, "gpus": H100})
    return agent


@pytest.fixture
def chat_agent(enrollment_key):
    agent, _ = register(enrollment_key, "chatbot-1", labels={"team": "support"})
    return agent


# --- who may look -------------------------------------------------------------------------

PAGES = ["/gpus/", "/llm/"]


def test_the_new_pages_need_a_login_and_a_role(client, nobody, gpu_agent):
    for url in PAGES + [f"/agents/{gpu_agent.pk}/?tab=gpu"]:
        response = client.get(url)
        assert response.status_code == 302 and response["Location"].startswith("/accounts/login/"), url
    client.force_login(nobody)
    for url in PAGES + [f"/agents/{gpu_agent.pk}/?tab=gpu", f"/agents/{gpu_agent.pk}/?tab=llm"]:
        response = client.get(url)
        assert response.status_code == 403, url
        assert "Your account has no role yet" in response.content.decode()


def test_the_header_links_every_page(client, viewer):
    client.force_login(viewer)
    html = client.get("/").content.decode()
    assert 'href="/gpus/"' in html and 'href="/llm/"' in html


# --- the agent page's tabs ----------------------------------------------------------------


def test_the_agent_page_opens_on_overview_and_serves_each_tab_as_a_partial(client, viewer, gpu_agent):
    client.force_login(viewer)
    full = client.get(f"/agents/{gpu_agent.pk}/").content.decode()
    assert 'id="agent-tab"' in full and 'id="agent-body"' in full and "<html" in full
    assert 'class="tab active" aria-current="page">Overview' in full
    assert "data-chart" not in full  # the overview has no charts

    partial = client.get(f"/agents/{gpu_agent.pk}/?tab=system&range=6h", HTTP_HX_REQUEST="true", HTTP_HX_TARGET="agent-tab")
    html = partial.content.decode()
    assert html.lstrip().startswith('<div id="agent-tab"') and "<html" not in html
    assert html.count("data-chart ") == 5
    assert 'id="agent-now"' in html
    assert '<a href="?tab=system&amp;range=6h"' in html and 'class="active" aria-current="true">6 h<' in html

    # A bookmarked tab is the whole page, the tab already open.
    bookmarked = client.get(f"/agents/{gpu_agent.pk}/?tab=gpu").content.decode()
    assert "<html" in bookmarked and 'id="gpu-devices"' in bookmarked and bookmarked.count("data-chart ") == 4


def test_an_unknown_tab_or_range_falls_back_instead_of_failing(client, viewer, gpu_agent):
    client.force_login(viewer)
    response = client.get(f"/agents/{gpu_agent.pk}/?tab=../../etc&range=99y")
    assert response.status_code == 200
    assert 'aria-current="page">Overview' in response.content.decode()


def _chart_sources(html: str) -> list[dict]:
    sources = []
    for src in re.findall(r'data-src="([^"]+)"', html):
        for url in src.replace("&amp;", "&").split():
            sources.append({k: v[0] for k, v in parse_qs(urlparse(url).query).items()})
    return sources


def test_chart_sources_are_query_urls_for_this_agent_and_range(client, viewer, gpu_agent):
    client.force_login(viewer)
    html = client.get(f"/agents/{gpu_agent.pk}/?tab=gpu&range=24h").content.decode()
    sources = _chart_sources(html)
    assert {s["metric"] for s in sources} == {"DCGM_FI_DEV_GPU_UTIL", "DCGM_FI_DEV_FB_USED", "DCGM_FI_DEV_GPU_TEMP",
                                              "DCGM_FI_DEV_POWER_USAGE"}
    assert all(s["agent"] == str(gpu_agent.pk) and s["step"] == "600" for s in sources)
    span = [(timezone.datetime.fromisoformat(s["to"]) - timezone.datetime.fromisoformat(s["from"])) for s in sources]
    assert set(span) == {timedelta(hours=24)}


def test_a_chart_source_answers_the_signed_in_viewer(client, viewer, gpu_agent):
    services.metrics_ingest(agent_id=gpu_agent.pk, samples=[gpu(ago(minutes=m), 0, 50.0 + m, 60.0) for m in range(1, 6)])
    services.metrics_rollup()  # a 1-hour chart reads the minute rollups
    client.force_login(viewer)
    html = client.get(f"/agents/{gpu_agent.pk}/?tab=gpu&range=1h").content.decode()
    src = re.search(r'data-src="([^"]*GPU_UTIL[^"]*)"', html).group(1).replace("&amp;", "&")

    body = client.get(src).json()

    assert body["metric"] == "DCGM_FI_DEV_GPU_UTIL" and body["unit"] == "percent"
    (series,) = body["series"]
    assert series["device"] == 0
    assert sorted(v for _, v in series["points"] if v is not None) == [51.0, 52.0, 53.0, 54.0, 55.0]


def test_the_gpu_tab_shows_each_device_with_clocks_errors_and_processes(client, viewer, gpu_agent):
    now = ago(seconds=5)
    services.metrics_ingest(agent_id=gpu_agent.pk, samples=[
        gpu(now, 0, 97.0, 84.0, xid_errors=3, ecc_sbe_total=2,
            processes=[{"pid": 4242, "name": "train.py", "used_memory_bytes": 38 * GiB}]),
        gpu(now, 1, 12.0, 41.0),
    ])
    client.force_login(viewer)
    html = client.get(f"/agents/{gpu_agent.pk}/?tab=gpu").content.decode()
    devices = html[html.index('id="gpu-devices"'):]
    rows = devices.split('<tr data-device="')[1:]
    assert len(rows) == 2
    assert "97%" in rows[0] and "84 °C" in rows[0] and 'class="num nowrap hot"' in rows[0]
    assert "1980 MHz" in rows[0] and "XID 3" in rows[0] and "2 / 0" in rows[0]
    assert "4242" in rows[0] and "train.py" in rows[0] and "38 GiB" in rows[0]
    assert "12%" in rows[1] and "hot" not in rows[1].split("data-testid")[0]


def test_an_agent_without_gpus_says_so_on_its_gpu_tab(client, viewer, chat_agent):
    client.force_login(viewer)
    html = client.get(f"/agents/{chat_agent.pk}/?tab=gpu").content.decode()
    assert "No GPUs on this agent." in html and "data-chart" not in html


def test_the_llm_tab_lists_usage_by_model_with_totals(client, viewer, chat_agent, gpu_agent):
    services.metrics_ingest(agent_id=chat_agent.pk, samples=[
        llm(ago(minutes=3)), llm(ago(minutes=2)),
        llm(ago(minutes=2), model="claude-sonnet-4-5", provider="anthropic", status="error", error_type="timeout", tokens_out=0),
    ])
    services.metrics_ingest(agent_id=gpu_agent.pk, samples=[llm(ago(minutes=2), model="gpt-4o")])  # not this agent's
    services.metrics_rollup()
    client.force_login(viewer)

    html = client.get(f"/agents/{chat_agent.pk}/?tab=llm&range=1h", HTTP_HX_REQUEST="true", HTTP_HX_TARGET="agent-tab").content.decode()

    usage = html[html.index('id="agent-llm-usage"'):]
    assert "openai/gpt-4o-mini" in usage and "anthropic/claude-sonnet-4-5" in usage and "openai/gpt-4o<" not in usage
    expected = selectors.llm_usage(start=ago(hours=1), group_by="model", agent_ids=[chat_agent.pk])["totals"]
    assert expected["calls"] == 3
    assert f'data-testid="agent-llm-cost">${expected["cost_usd"]:.4f}<' in usage
    assert html.count("data-chart ") == 4 and 'data-refresh="60"' in html


# --- the live agent frame carries the feed the charts append from -------------------------


def test_the_agent_frame_carries_the_latest_readings_for_the_charts(viewer, gpu_agent):
    ts = ago(seconds=3)
    services.metrics_ingest(agent_id=gpu_agent.pk, samples=[
        host(ts, cpu=41.5, disk_read_bytes_per_s=1024.0), gpu(ts, 0, 90.0, 70.0), gpu(ts, 1, 10.0, 40.0)])

    frame = render.agent_frame(agent_id=gpu_agent.pk, user=viewer)

    feed = re.search(r'<div id="telemetry-feed" hidden data-ts="(\d+)" data-values="([^"]*)" hx-swap-oob="true">', frame)
    assert feed, frame[-500:]
    assert int(feed.group(1)) == int(ts.timestamp())
    values = json.loads(feed.group(2).replace("&quot;", '"'))
    assert values["host.cpu_percent"] == 41.5
    assert values["host.disk_read_bytes_per_s"] == 1024.0
    assert values["DCGM_FI_DEV_GPU_UTIL/0"] == 90.0 and values["DCGM_FI_DEV_GPU_TEMP/1"] == 40.0
    # The System tab's current readings and the GPU tab's devices update in the same frame.
    assert 'id="agent-now"' in frame and 'id="gpu-devices"' in frame and 'id="agent-head"' in frame


def test_the_feed_falls_back_to_the_heartbeat_time(viewer, enrollment_key):
    agent, token = register(enrollment_key, "hb-only")
    from apps.agents import services as agent_services

    agent_services.agent_heartbeat_record(agent_id=agent.pk, token=token, state="idle", readings={"cpu_percent": 12.0})
    agent = Agent.objects.get(pk=agent.pk)
    feed = telemetry.agent_feed(agent)
    assert feed == {"ts": int(agent.last_heartbeat_at.timestamp()), "values": {"host.cpu_percent": 12.0}}


# --- the fleet GPU page -------------------------------------------------------------------


def test_the_gpu_page_groups_devices_by_agent_with_a_fleet_summary(client, viewer, gpu_agent, enrollment_key):
    other, _ = register(enrollment_key, "inference-1", kind="worker", labels={"pool": "inference"},
                        host={"hostname": "inf", "gpus": [{"index": 0, "name": "NVIDIA L4", "memory_total_bytes": 24 * GiB}]})
    now = ago(seconds=5)
    services.metrics_ingest(agent_id=gpu_agent.pk, samples=[gpu(now, 0, 90.0, 85.0), gpu(now, 1, 2.0, 40.0)])
    services.metrics_ingest(agent_id=other.pk, samples=[gpu(now, 0, 70.0, 60.0, memory_total_bytes=24 * GiB, memory_used_bytes=6 * GiB)])
    client.force_login(viewer)

    html = client.get("/gpus/").content.decode()

    assert 'ws-connect="/ws/live/?page=gpus"' in html
    assert 'data-testid="gpu-count">3<' in html
    assert 'data-testid="gpu-util-avg">54%<' in html  # (90 + 2 + 70) / 3
    assert 'data-testid="gpu-hot">1<' in html and 'data-testid="gpu-idle">1<' in html
    assert f'id="gpu-agent-{gpu_agent.pk}"' in html and f'id="gpu-agent-{other.pk}"' in html
    assert "2× H100 80GB HBM3" in html and "1× L4" in html
    assert {s["metric"] for s in _chart_sources(html)} == {"DCGM_FI_DEV_GPU_UTIL", "DCGM_FI_DEV_GPU_TEMP"}
    assert all(s["group_by"] == "fleet" for s in _chart_sources(html))


def test_the_gpu_table_filters_by_name_or_label_as_a_partial(client, viewer, gpu_agent, enrollment_key):
    register(enrollment_key, "inference-1", kind="worker", labels={"pool": "inference"},
             host={"hostname": "inf", "gpus": [{"index": 0, "name": "NVIDIA L4"}]})
    client.force_login(viewer)

    by_label = client.get("/gpus/?q=pool%3Dinference", HTTP_HX_REQUEST="true", HTTP_HX_TARGET="gpu-table").content.decode()
    assert by_label.lstrip().startswith('<div id="gpu-table"')
    assert "inference-1" in by_label and "trainer-1" not in by_label
    by_name = client.get("/gpus/?q=trainer", HTTP_HX_REQUEST="true", HTTP_HX_TARGET="gpu-table").content.decode()
    assert "trainer-1" in by_name and "inference-1" not in by_name
    nothing = client.get("/gpus/?q=nope", HTTP_HX_REQUEST="true", HTTP_HX_TARGET="gpu-table").content.decode()
    assert "No GPUs on agents matching “nope”" in nothing


def test_the_gpu_page_without_gpus_explains_how_they_appear(client, viewer, chat_agent):
    client.force_login(viewer)
    html = client.get("/gpus/").content.decode()
    assert "No GPUs in the fleet yet." in html and 'data-testid="gpu-count">0<' in html


def test_a_gpu_frame_pushes_the_summary_the_changed_groups_and_a_feed(viewer, gpu_agent, chat_agent):
    services.metrics_ingest(agent_id=gpu_agent.pk, samples=[gpu(ago(seconds=2), 0, 80.0, 82.0), gpu(ago(seconds=2), 1, 60.0, 70.0)])

    frame = render.gpu_frame(agent_ids=[str(gpu_agent.pk), str(chat_agent.pk)], refresh_list=False, user=viewer)

    assert 'id="gpu-summary"' in frame and 'data-testid="gpu-hot">1<' in frame
    assert f'<template><tbody id="gpu-agent-{gpu_agent.pk}"' in frame and 'hx-swap-oob="outerHTML"' in frame
    assert f"gpu-agent-{chat_agent.pk}" not in frame  # no GPUs, no group
    values = json.loads(re.search(r'id="telemetry-feed"[^>]*data-values="([^"]*)"', frame).group(1).replace("&quot;", '"'))
    assert values == {"DCGM_FI_DEV_GPU_UTIL": 70.0, "DCGM_FI_DEV_GPU_TEMP": 76.0, "DCGM_FI_DEV_GPU_TEMP:max": 82.0}
    assert "live-refresh" not in frame
    assert 'data-refresh="gpu-table"' in render.gpu_frame(agent_ids=[str(gpu_agent.pk)], refresh_list=True, user=viewer)


def test_silent_agents_gpus_are_shown_but_not_averaged(viewer, gpu_agent, enrollment_key):
    other, _ = register(enrollment_key, "old-box", kind="worker",
                        host={"hostname": "old", "gpus": [{"index": 0, "name": "NVIDIA T4", "memory_total_bytes": 16 * GiB}]})
    services.metrics_ingest(agent_id=gpu_agent.pk, samples=[gpu(ago(seconds=2), 0, 80.0, 60.0)])
    services.metrics_ingest(agent_id=other.pk, samples=[gpu(ago(minutes=20), 0, 0.0, 95.0)])
    Agent.objects.filter(pk=other.pk).update(status="stale")

    summary = telemetry.gpu_summary(selectors.fleet_gpus())

    assert summary.devices == 3 and summary.reporting == 1
    assert summary.util_avg == 80.0 and summary.hot == 0 and summary.idle == 0


# --- LLM usage and cost -------------------------------------------------------------------


def test_the_llm_page_shows_totals_breakdowns_and_trend_charts(client, viewer, chat_agent, gpu_agent):
    services.metrics_ingest(agent_id=chat_agent.pk, samples=[
        llm(ago(minutes=30)), llm(ago(minutes=20), tokens_in=3000),
        llm(ago(minutes=10), model="claude-sonnet-4-5", provider="anthropic", status="error", error_type="rate_limit", tokens_out=0),
    ])
    services.metrics_ingest(agent_id=gpu_agent.pk, samples=[llm(ago(minutes=5), model="gpt-4o", tokens_in=10_000, tokens_out=2_000)])
    services.metrics_rollup()
    client.force_login(viewer)

    html = client.get("/llm/").content.decode()

    window = charts.window_for(charts.RANGES["24h"], whole_hours=True)
    totals = selectors.llm_usage(start=window.start, end=window.end)["totals"]
    assert totals["calls"] == 4 and totals["errors"] == 1
    assert 'data-testid="llm-calls">4<' in html
    assert f'data-testid="llm-cost">${totals["cost_usd"]:.4f}<' in html or f'data-testid="llm-cost">${totals["cost_usd"]:.2f}<' in html
    assert 'data-testid="llm-error-rate">25%<' in html
    assert 'data-testid="llm-tokens">17.4k<' in html  # 15,000 in + 2,400 out
    by_model = html[html.index('id="usage-by-model"'):html.index('id="usage-by-provider"')]
    assert by_model.index("gpt-4o<") < by_model.index("gpt-4o-mini<")  # most expensive first
    by_agent = html[html.index('id="usage-by-agent"'):]
    assert f'href="/agents/{chat_agent.pk}/?tab=llm"' in by_agent and "trainer-1" in by_agent
    assert window.end.strftime("%Y-%m-%d") in html[html.index('id="usage-by-day"'):]
    metrics = {s["metric"] for s in _chart_sources(html)}
    assert metrics == {"llm.cost_usd", "llm.tokens_in", "llm.tokens_out", "llm.calls", "llm.errors", "llm.latency_ms"}
    assert all(s["group_by"] == "fleet" and s["step"] == "3600" for s in _chart_sources(html))
    assert "model price table kept by admins" in html  # viewers get no admin link


def test_admins_get_a_link_to_the_price_table(client, admin_user):
    admin_user.is_staff = True
    admin_user.save()
    client.force_login(admin_user)
    html = client.get("/llm/?range=7d").content.decode()
    assert 'href="/admin/metrics/modelprice/"' in html
    assert 'class="active" aria-current="true">7 d<' in html


def test_the_llm_page_without_calls_says_how_to_report_them(client, viewer):
    client.force_login(viewer)
    html = client.get("/llm/?range=30d").content.decode()
    assert "No LLM calls in the last 30 d." in html
    assert 'data-testid="llm-calls">0<' in html


def test_the_llm_regions_refresh_as_partials(client, viewer):
    client.force_login(viewer)
    for region in ("llm-summary", "llm-tables"):
        html = client.get("/llm/?range=24h", HTTP_HX_REQUEST="true", HTTP_HX_TARGET=region).content.decode()
        assert html.lstrip().startswith(f'<section id="{region}"') or html.lstrip().startswith(f'<div id="{region}"')
        assert "<html" not in html


# --- fleet rows ---------------------------------------------------------------------------


def test_fleet_rows_show_gpu_utilization_and_tokens_per_minute(client, viewer, gpu_agent, chat_agent):
    services.metrics_ingest(agent_id=gpu_agent.pk, samples=[gpu(ago(seconds=5), 0, 90.0, 60.0), gpu(ago(seconds=5), 1, 30.0, 50.0)])
    services.metrics_ingest(agent_id=chat_agent.pk, samples=[llm(ago(minutes=1), tokens_in=4000, tokens_out=1000)])
    services.metrics_rollup()
    client.force_login(viewer)

    html = client.get("/").content.decode()

    gpu_row = html[html.index(f'id="agent-row-{gpu_agent.pk}"'):].split("</tr>")[0]
    chat_row = html[html.index(f'id="agent-row-{chat_agent.pk}"'):].split("</tr>")[0]
    assert 'title="GPU 60%"' in gpu_row and "tok/min" not in gpu_row
    assert 'data-testid="tokens-per-minute"' in chat_row and ">1.0k <span>tok/min" in chat_row  # 5,000 over 5 minutes
    assert "GPU" not in chat_row.split("cell-load")[1]


def test_the_fleet_page_reads_tokens_per_minute_in_one_query_however_many_rows(client, viewer, enrollment_key):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    client.force_login(viewer)

    def queries_for_page():
        with CaptureQueriesContext(connection) as ctx:
            assert client.get("/").status_code == 200
        return len(ctx.captured_queries), sum("metrics_llm_1m" in q["sql"] for q in ctx.captured_queries)

    register(enrollment_key, "bot-0")
    few = queries_for_page()
    for i in range(1, 8):
        register(enrollment_key, f"bot-{i}")
    many = queries_for_page()
    assert few == many and many[1] == 1
