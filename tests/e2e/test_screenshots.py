"""The pages as an operator sees them, with a realistic fleet: screenshots to look at.

Full-page PNGs land in tests/e2e/artifacts/screens/. The assertions catch what a
screenshot would show: nothing wider than the window, counts that add up, long names
that stay inside their cells.
"""

import pytest
from playwright.sync_api import expect

from apps.agents import services
from apps.security.roles import Role
from tests.conftest import make_user
from tests.e2e.support import ARTIFACTS, FLEET, in_thread, login, seed_fleet, seed_telemetry, wait_live

pytestmark = pytest.mark.e2e

SCREENS = ARTIFACTS / "screens"


def _shot(page, name, *, full_page=True):
    SCREENS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENS / f"{name}.png"), full_page=full_page)


def _no_horizontal_overflow(page):
    widths = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    assert widths[0] <= widths[1], f"the page is {widths[0]} px wide in a {widths[1]} px window"


def test_pages_look_right_with_a_realistic_fleet(new_page, live_url):
    operator = make_user("oscar-operator", Role.OPERATOR)
    _, key = services.enrollment_key_create(name="screens")

    page = new_page()
    page.goto("/accounts/login/")
    _shot(page, "login")
    page.get_by_label("Username").fill("oscar-operator")
    page.get_by_label("Password").fill("wrong")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_be_visible()
    expect(page.get_by_label("Password")).to_be_focused()
    _shot(page, "login-error")

    login(page, "oscar-operator")
    expect(page.locator("#agent-rows")).to_contain_text("No agents yet.")
    wait_live(page)
    _shot(page, "fleet-empty")

    # The whole fleet enrolls while the page is open: it fills in by itself.
    ids = in_thread(seed_fleet, enrollment_key=key, operator=operator)
    expect(page.locator("#agent-rows tr")).to_have_count(len(FLEET))
    # An hour of telemetry, so the rows show tokens per minute beside CPU, memory and GPU.
    in_thread(seed_telemetry, ids, hours=1, llm_hours=1)
    page.reload()
    wait_live(page)
    fates = [row[-1] for row in FLEET]
    for status in ("online", "late", "stale", "isolated", "offline"):
        expect(page.get_by_test_id(f"count-{status}")).to_have_text(str(fates.count(status)))
    expect(page.locator("#agent-rows tr")).to_have_count(len(FLEET))
    _no_horizontal_overflow(page)
    _shot(page, "fleet")

    # Long names and hosts are cut with an ellipsis inside their cell, not spilled over.
    long_name = next(n for n in ids if len(n) > 40)
    link = page.locator(f"#agent-row-{ids[long_name]} .cell-name a")
    assert link.evaluate("a => a.getBoundingClientRect().right <= a.closest('td').getBoundingClientRect().right + 1")
    # At most three labels in a row, and a count of the rest.
    labels = page.locator(f"#agent-row-{ids[long_name]} .tags-row .tag")
    expect(labels).to_have_text(["env=canary", "team=platform-engineering", "owner=release-train-4", "+1"])

    page.get_by_role("checkbox", name="Stale").check()
    expect(page.locator("#agent-rows tr")).to_have_count(fates.count("stale"))
    _shot(page, "fleet-filtered")
    page.get_by_role("searchbox", name="Search agents").fill("no-such-agent")
    expect(page.locator("#agent-rows")).to_contain_text("No agents match")
    _shot(page, "fleet-empty-filter")

    page.goto(f"/agents/{ids['gpu-worker-h100-01']}/")
    wait_live(page)
    expect(page.locator("#agent-body tbody tr")).to_have_count(8 + 2)  # 8 GPUs, 2 commands
    _no_horizontal_overflow(page)
    _shot(page, "agent-gpu-worker")

    page.goto(f"/agents/{ids[long_name]}/")
    _no_horizontal_overflow(page)
    _shot(page, "agent-long-name")
    page.goto(f"/agents/{ids['triage-bot']}/")
    expect(page.get_by_role("status")).to_contain_text("Isolated since")
    _shot(page, "agent-isolated")
    page.goto(f"/agents/{ids['sql-analyst']}/")
    expect(page.get_by_role("status")).to_contain_text("No heartbeat since")
    _shot(page, "agent-stale")

    # Narrower windows: a laptop split screen and a phone.
    for width, height, name in ((1024, 768, "fleet-1024"), (390, 844, "fleet-390")):
        narrow = new_page(viewport={"width": width, "height": height})
        login(narrow, "oscar-operator")
        expect(narrow.locator("#agent-rows tr")).to_have_count(len(FLEET))
        _no_horizontal_overflow(narrow)
        _shot(narrow, name)
        _shot(narrow, f"{name}-top", full_page=False)
    narrow.goto(f"/agents/{ids['gpu-worker-h100-01']}/")
    _no_horizontal_overflow(narrow)
    _shot(narrow, "agent-390")
    _shot(narrow, "agent-390-top", full_page=False)
