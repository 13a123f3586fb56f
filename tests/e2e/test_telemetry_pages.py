"""Telemetry in the browser: the agent page's chart tabs, the fleet GPU page, LLM usage
and cost, with a realistic fleet and hours of samples ingested through the service.

Screenshots land in tests/e2e/artifacts/screens/ (telemetry-*.png).
"""

from datetime import timedelta

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from apps.agents import services
from apps.dashboard import charts, telemetry
from apps.metrics import selectors
from apps.metrics import services as metrics_services
from apps.security.roles import Role
from tests.conftest import make_user
from tests.e2e.support import ARTIFACTS, GiB, in_thread, login, seed_fleet, seed_telemetry, wait_live

pytestmark = pytest.mark.e2e

SCREENS = ARTIFACTS / "screens"


def _shot(page, name, *, full_page=True):
    # Every chart on the page has drawn (or said why not) before the picture is taken.
    page.wait_for_function("[...document.querySelectorAll('[data-chart]')].every(n => n.dataset.state && n.dataset.state !== 'loading')")
    SCREENS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENS / f"telemetry-{name}.png"), full_page=full_page)


def _no_horizontal_overflow(page):
    widths = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    assert widths[0] <= widths[1], f"the page is {widths[0]} px wide in a {widths[1]} px window"


def _seeded(**telemetry_kwargs) -> dict[str, str]:
    _, key = services.enrollment_key_create(name="telemetry")
    ids = in_thread(seed_fleet, enrollment_key=key)
    in_thread(seed_telemetry, ids, **telemetry_kwargs)
    return ids


def _chart(page, chart_id):
    """The chart, once it has drawn its data on a canvas."""
    chart = page.locator(f"#chart-{chart_id}")
    expect(chart).to_have_attribute("data-state", "ready")
    expect(chart.locator("canvas")).to_have_count(1)
    return chart


def _points(chart) -> int:
    return int(chart.get_attribute("data-points"))


def _ingest(agent_id, samples):
    return in_thread(metrics_services.metrics_ingest, agent_id=agent_id, samples=samples)


def _now_iso():
    return timezone.now().isoformat()


def test_an_agent_page_charts_its_telemetry_by_tab_and_appends_live(new_page, live_url):
    make_user("vera-viewer", Role.VIEWER)
    ids = _seeded()
    worker = ids["gpu-worker-h100-01"]

    page = new_page()
    login(page, "vera-viewer")
    page.goto(f"/agents/{worker}/")
    wait_live(page)
    expect(page.locator(".tabs").get_by_role("link", name="Overview")).to_have_attribute("aria-current", "page")

    # System: five charts with data, switched to without a reload and linkable.
    page.evaluate("window.__marker = 1")
    page.locator(".tabs").get_by_role("link", name="System").click()
    expect(page).to_have_url(f"{live_url}/agents/{worker}/?tab=system&range=1h")
    for chart_id in ("cpu", "load", "memory", "disk-io", "net-io"):
        assert _points(_chart(page, chart_id)) > 30, chart_id
    expect(page.locator("#chart-memory .u-legend")).to_contain_text("Installed")
    expect(page.get_by_test_id("now-cpu")).to_have_text("35%")
    _no_horizontal_overflow(page)
    _shot(page, "agent-system")

    # GPU: per-device charts (8 series each) and the device table.
    page.locator(".tabs").get_by_role("link", name="GPU").click()
    util = _chart(page, "gpu-util")
    expect(util.locator(".u-legend .u-series")).to_have_count(1 + 8)
    _chart(page, "gpu-temp")
    devices = page.locator("#gpu-devices tbody tr")
    expect(devices).to_have_count(8)
    expect(devices.nth(2)).to_contain_text("XID 1")
    expect(devices.nth(0)).to_contain_text("python")
    _no_horizontal_overflow(page)
    _shot(page, "agent-gpu")

    # A new reading arrives (host and GPUs in one batch, as the SDK sends them): the chart
    # appends it, the device table shows it, no reload.
    before = _points(util)
    last_values = "n => { const c = n._pgChart; return c.data.slice(1).map(ys => ys[ys.length - 1]); }"
    old = util.evaluate(last_values)
    _ingest(worker, [{"kind": "host", "ts": _now_iso(), "cpu_percent": 40.0}] + [{"kind": "gpu", "ts": _now_iso(), "index": i, "utilization_percent": 99.0, "temperature_c": 86.0 if i == 0 else 70.0,
                      "memory_used_bytes": 70 * GiB, "memory_total_bytes": 80 * GiB, "power_w": 690.0} for i in range(8)])
    expect(util).to_have_attribute("data-appended", "1")
    assert _points(util) >= before  # a new bucket, or the current one updated
    expect(devices.nth(0).get_by_test_id("gpu-temp")).to_have_text("86 °C")
    expect(devices.nth(0).get_by_test_id("gpu-temp")).to_have_class("num nowrap hot")
    # Each device's newest point is the reading, or the mean of the minute it fell into.
    for was, now in zip(old, util.evaluate(last_values)):
        assert now == 99.0 or (was is not None and abs(now - (was + 99.0) / 2) < 0.01), (was, now)

    # The range picker re-reads the charts over a longer window.
    page.get_by_role("link", name="6 h").click()
    expect(page).to_have_url(f"{live_url}/agents/{worker}/?tab=gpu&range=6h")
    assert _points(_chart(page, "gpu-util")) > 100
    assert page.evaluate("window.__marker") == 1, "the page was reloaded"

    # An LLM agent's AI tab: usage by model with the same totals as the selector.
    chat = ids["planner-eu-1"]
    page.goto(f"/agents/{chat}/?tab=llm&range=24h")
    assert _points(_chart(page, "llm-tokens")) > 10
    _chart(page, "llm-cost")
    usage = selectors.llm_usage(start=timezone.now() - timedelta(hours=24), group_by="model", agent_ids=[chat])
    expect(page.locator("#agent-llm-usage tbody tr")).to_have_count(1)
    expect(page.locator("#agent-llm-usage tfoot")).to_contain_text(f"{usage['totals']['calls']:,}")
    _shot(page, "agent-llm")

    for width, height, tab in ((1024, 768, "gpu"), (390, 844, "system")):
        narrow = new_page(viewport={"width": width, "height": height})
        login(narrow, "vera-viewer")
        narrow.goto(f"/agents/{worker}/?tab={tab}")
        _chart(narrow, "cpu" if tab == "system" else "gpu-util")
        _no_horizontal_overflow(narrow)
        _shot(narrow, f"agent-{tab}-{width}")


def test_a_chart_starts_from_an_empty_state_with_the_first_live_sample(new_page, live_url, agent_client):
    make_user("vera-viewer", Role.VIEWER)
    agent = agent_client()
    agent.register("fresh-worker-1")

    page = new_page()
    login(page, "vera-viewer")
    page.goto(f"/agents/{agent.id}/?tab=system")
    wait_live(page)
    cpu = page.locator("#chart-cpu")
    expect(cpu).to_have_attribute("data-state", "empty")
    expect(cpu).to_contain_text("No data in this range yet.")
    _shot(page, "agent-empty")

    agent.heartbeat(state="busy", readings={"cpu_percent": 37.0, "memory_used_bytes": 3 * GiB, "memory_total_bytes": 16 * GiB})
    expect(cpu).to_have_attribute("data-state", "ready")
    expect(cpu.locator("canvas")).to_have_count(1)
    expect(cpu.locator(".chart-now")).to_have_text("37%")
    expect(page.get_by_test_id("now-cpu")).to_have_text("37%")


def test_the_gpu_page_shows_every_device_and_updates_live(new_page, live_url):
    make_user("vera-viewer", Role.VIEWER)
    ids = _seeded()
    devices = in_thread(selectors.fleet_gpus)

    page = new_page()
    login(page, "vera-viewer")
    page.get_by_role("link", name="GPUs").click()
    expect(page.get_by_role("heading", name="GPUs", exact=True)).to_be_visible()
    wait_live(page)
    expect(page.get_by_test_id("gpu-count")).to_have_text(str(len(devices)))
    expect(page.locator("tbody.gpu-group")).to_have_count(len({d.agent_id for d in devices}))
    expect(page.locator("tr.gpu-row")).to_have_count(len(devices))
    assert _points(_chart(page, "fleet-gpu-util")) > 30
    temp = _chart(page, "fleet-gpu-temp")
    expect(temp.locator(".u-legend")).to_contain_text("Hottest")
    _no_horizontal_overflow(page)
    _shot(page, "gpus")

    # The L4 worker comes back and reports a hot device: its rows, the summary and the
    # fleet charts follow without a reload.
    l4 = ids["gpu-worker-l4-07"]
    group = page.locator(f"#gpu-agent-{l4}")
    expect(group.locator(".badge")).to_have_text("stale")
    hot_before = int(page.get_by_test_id("gpu-hot").inner_text())
    temp_chart = page.locator("#chart-fleet-gpu-temp")
    appended = int(temp_chart.get_attribute("data-appended") or 0)
    page.evaluate("window.__marker = 1")
    _ingest(l4, [{"kind": "gpu", "ts": _now_iso(), "index": 0, "utilization_percent": 100.0, "temperature_c": 91.0,
                  "memory_used_bytes": 22 * GiB, "memory_total_bytes": 24 * GiB, "power_w": 71.0, "power_limit_w": 72.0}])
    expect(group.get_by_test_id("gpu-temp")).to_have_text("91 °C")
    expect(group.get_by_test_id("gpu-util")).to_contain_text("100%")
    page.wait_for_function("([n, before]) => +(n.dataset.appended || 0) > before", arg=[temp_chart.element_handle(), appended])
    # Still stale (no heartbeat), so not counted as hot: silent agents are history.
    expect(page.get_by_test_id("gpu-hot")).to_have_text(str(hot_before))
    in_thread(lambda: services.agent_heartbeat_record(agent_id=l4, token=_token_for(l4), state="busy"))
    expect(group.locator(".badge")).to_have_text("online")
    expect(page.get_by_test_id("gpu-hot")).to_have_text(str(hot_before + 1))
    # ... and the fleet temperature chart's "Hottest" line reaches it.
    page.wait_for_function("n => { const d = n._pgChart.data; return d[2][d[2].length - 1] >= 91; }", arg=temp_chart.element_handle())
    assert page.evaluate("window.__marker") == 1
    _shot(page, "gpus-live")

    # Filter by label: only that pool's devices.
    page.get_by_role("searchbox", name="Filter GPUs by agent").fill("pool=train")
    expect(page.locator("tbody.gpu-group")).to_have_count(2)
    expect(page).to_have_url(f"{live_url}/gpus/?q=pool%3Dtrain&range=1h")
    _shot(page, "gpus-filtered")

    for width, height in ((1024, 768), (390, 844)):
        narrow = new_page(viewport={"width": width, "height": height})
        login(narrow, "vera-viewer")
        narrow.goto("/gpus/")
        _chart(narrow, "fleet-gpu-util")
        _no_horizontal_overflow(narrow)
        _shot(narrow, f"gpus-{width}")


def _token_for(agent_id):
    # seed_fleet does not hand tokens out; mint a fresh one the way a re-registration would.
    from apps.agents.models import Agent
    from apps.core.tokens import token_hash, token_make

    raw = token_make("pga_")
    Agent.objects.filter(pk=agent_id).update(token_hash=token_hash(raw))
    return raw


def test_the_llm_page_shows_cost_totals_breakdowns_and_trends(new_page, live_url):
    admin = make_user("ada-admin", Role.ADMIN)
    admin.is_staff = True
    admin.save()
    _seeded(llm_hours=48)  # two days: today's totals compare with yesterday's
    window = charts.window_for(charts.RANGES["24h"], whole_hours=True)
    usage = in_thread(telemetry.llm_usage_page, window=window)

    page = new_page()
    login(page, "ada-admin")
    page.get_by_role("link", name="LLM usage").click()
    expect(page.get_by_role("heading", name="LLM usage and cost")).to_be_visible()
    expect(page.get_by_test_id("llm-calls")).to_have_text(f"{usage['totals']['calls']:,}")
    expect(page.get_by_test_id("total-cost")).to_have_text(_usd(usage["totals"]["cost_usd"]))
    expect(page.locator("#usage-by-model tbody tr")).to_have_count(len(usage["model"]))
    expect(page.locator("#usage-by-agent tbody tr")).to_have_count(len(usage["agent"]))
    # The most expensive model first, and its share of the cost.
    top = usage["model"][0]
    expect(page.locator("#usage-by-model tbody tr").first).to_contain_text(top["model"])
    expect(page.locator("#usage-by-model tbody tr").first.locator(".share-num")).to_have_text(f"{round(top['share'])}%")
    cost = _chart(page, "cost-trend")
    assert _points(cost) >= 20  # hourly bars over a day of calls
    _chart(page, "token-trend")
    expect(page.get_by_role("link", name="model price table")).to_have_attribute("href", "/admin/metrics/modelprice/")
    expect(page.locator("#live-indicator .label")).to_have_text("refreshes each minute")
    _no_horizontal_overflow(page)
    _shot(page, "llm")

    page.get_by_role("link", name="7 d").click()
    expect(page).to_have_url(f"{live_url}/llm/?range=7d")
    _chart(page, "cost-trend")

    narrow = new_page(viewport={"width": 390, "height": 844})
    login(narrow, "ada-admin")
    narrow.goto("/llm/")
    _chart(narrow, "cost-trend")
    _no_horizontal_overflow(narrow)
    _shot(narrow, "llm-390")


def _usd(v):
    from apps.dashboard.templatetags.pulseguard import usd

    return usd(v)
