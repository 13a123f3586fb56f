"""An operator watches the fleet change under their eyes, without reloading."""

import re
import time
from datetime import timedelta

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from apps.agents import services
from apps.agents.models import Agent
from apps.security.roles import Role
from tests.conftest import make_user
from tests.e2e.support import in_thread, login, wait_live

pytestmark = pytest.mark.e2e


def _row(page, agent_id):
    return page.locator(f"#agent-row-{agent_id}")


def _mark_page(page):
    # Survives only if the page is never reloaded.
    page.evaluate("window.__marker = 1")


def _assert_not_reloaded(page):
    assert page.evaluate("window.__marker") == 1, "the page was reloaded"


def test_operator_watches_an_agent_turn_stale_without_reload(page, live_url, agent_client):
    make_user("oscar-operator", Role.OPERATOR)
    agent = agent_client()
    agent.register("planner-eu-1")
    agent.heartbeat(state="busy", latency_ms=42, readings={"cpu_percent": 37.5})

    login(page, "oscar-operator")
    expect(page.get_by_role("heading", name="Fleet")).to_be_visible()
    row = _row(page, agent.id)
    expect(row.get_by_test_id("status")).to_have_text("Online")
    expect(page.get_by_test_id("count-online")).to_have_text("1")
    expect(page.get_by_test_id("count-stale")).to_have_text("0")
    wait_live(page)
    _mark_page(page)

    # Ten minutes of silence, then the check Celery beat runs every few seconds.
    Agent.objects.filter(pk=agent.id).update(last_heartbeat_at=timezone.now() - timedelta(minutes=10))
    moved = in_thread(services.agents_check_heartbeats)
    assert [(t.from_status, t.to_status) for t in moved] == [("online", "stale")]

    expect(row.get_by_test_id("status")).to_have_text("Stale")
    expect(row).to_have_attribute("data-status", "stale")
    expect(page.get_by_test_id("count-stale")).to_have_text("1")
    expect(page.get_by_test_id("count-online")).to_have_text("0")
    expect(row.get_by_test_id("health")).to_have_text("0")
    _assert_not_reloaded(page)

    # The agent speaks again: back online, live.
    agent.heartbeat(state="idle", latency_ms=40)
    expect(row.get_by_test_id("status")).to_have_text("Online")
    expect(page.get_by_test_id("count-online")).to_have_text("1")
    expect(page.get_by_test_id("count-stale")).to_have_text("0")
    expect(row.get_by_test_id("health")).to_have_text("100")
    _assert_not_reloaded(page)


def test_a_new_agent_appears_in_an_open_fleet_page(page, live_url, agent_client):
    make_user("vera-viewer", Role.VIEWER)
    first = agent_client()
    first.register("alpha-worker")

    login(page, "vera-viewer")
    expect(_row(page, first.id)).to_be_visible()
    expect(page.get_by_test_id("count-total")).to_have_text("1")
    wait_live(page)
    _mark_page(page)

    # Two newcomers, one after the other: each must show up (not only every other one).
    for n, name in enumerate(["beta-worker", "gamma-worker"], start=2):
        newcomer = agent_client()
        newcomer.register(name)
        expect(_row(page, newcomer.id).get_by_test_id("status")).to_have_text("Online")
        expect(page.get_by_test_id("count-total")).to_have_text(str(n))
    expect(page.locator("#agent-rows tr")).to_have_count(3)
    _assert_not_reloaded(page)


def test_a_filtered_fleet_page_keeps_its_filter_when_agents_join(page, live_url, agent_client):
    make_user("vera-viewer", Role.VIEWER)
    agent_client().register("search-eu-1")

    login(page, "vera-viewer")
    page.get_by_role("searchbox", name="Search agents").fill("search")
    expect(page).to_have_url(re.compile(r"[?&]q=search"))
    wait_live(page)
    _mark_page(page)

    agent_client().register("billing-us-1")
    match = agent_client()
    match.register("search-us-2")
    expect(_row(page, match.id)).to_be_visible()
    expect(page.locator("#agent-rows tr")).to_have_count(2)
    expect(page.get_by_text("billing-us-1")).to_have_count(0)
    _assert_not_reloaded(page)


def test_after_the_socket_drops_the_page_catches_up_with_what_it_missed(page, live_url, agent_client):
    """A server restart drops the socket; frames sent meanwhile are lost, so on reconnect
    the page re-reads its live parts instead of showing a fleet that is no longer true."""
    make_user("vera-viewer", Role.VIEWER)
    agent = agent_client()
    agent.register("planner-eu-1")

    state = {"drop": False, "dropped": 0, "sockets": []}

    def proxy(ws):
        server = ws.connect_to_server()
        state["sockets"].append(ws)

        def to_page(message):
            if state["drop"]:
                state["dropped"] += 1
            else:
                ws.send(message)

        server.on_message(to_page)

    page.route_web_socket(re.compile(r"/ws/live/"), proxy)
    login(page, "vera-viewer")
    row = _row(page, agent.id)
    expect(row.get_by_test_id("status")).to_have_text("Online")
    wait_live(page)
    _mark_page(page)

    # The agent goes stale while frames are being lost.
    state["drop"] = True
    Agent.objects.filter(pk=agent.id).update(last_heartbeat_at=timezone.now() - timedelta(minutes=10))
    in_thread(services.agents_check_heartbeats)
    deadline = time.monotonic() + 5
    while not state["dropped"] and time.monotonic() < deadline:
        page.wait_for_timeout(25)
    assert state["dropped"], "the stale frame never came"
    expect(row.get_by_test_id("status")).to_have_text("Online")  # the page missed it

    # The server "restarts": the socket closes with 1012, the page reconnects and catches up.
    state["drop"] = False
    state["sockets"][0].close(code=1012, reason="service restart")
    expect(page.locator("#live-indicator .label")).to_have_text("reconnecting")
    wait_live(page)
    assert len(state["sockets"]) == 2
    expect(row.get_by_test_id("status")).to_have_text("Stale")
    expect(page.get_by_test_id("count-stale")).to_have_text("1")
    _assert_not_reloaded(page)


def test_a_viewer_whose_role_is_taken_away_stops_getting_frames(page, live_url, agent_client):
    viewer = make_user("vera-viewer", Role.VIEWER)
    agent = agent_client()
    agent.register("planner-eu-1")

    login(page, "vera-viewer")
    row = _row(page, agent.id)
    expect(row.get_by_test_id("status")).to_have_text("Online")
    wait_live(page)

    viewer.groups.clear()
    Agent.objects.filter(pk=agent.id).update(last_heartbeat_at=timezone.now() - timedelta(minutes=10))
    in_thread(services.agents_check_heartbeats)

    # The server re-checks the role before each frame: this one is never rendered for her.
    expect(page.locator("#live-indicator .label")).to_have_text("no access: reload")
    expect(row.get_by_test_id("status")).to_have_text("Online")
