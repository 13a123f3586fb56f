"""An operator acts on one agent from its page; a viewer can only look."""

import pytest
from playwright.sync_api import expect

from apps.agents.models import AgentCommand
from apps.security.roles import Role
from tests.conftest import make_user
from tests.e2e.support import login, wait_live

pytestmark = pytest.mark.e2e


def test_operator_isolates_an_agent_from_its_page(page, live_url, agent_client):
    make_user("oscar-operator", Role.OPERATOR)
    agent = agent_client()
    agent.register("summarizer-eu-3")
    agent.heartbeat(state="busy", latency_ms=80, readings={"cpu_percent": 55.0})

    login(page, "oscar-operator")
    page.get_by_role("link", name="summarizer-eu-3").click()
    expect(page.get_by_role("heading", name="summarizer-eu-3")).to_be_visible()
    status = page.get_by_test_id("agent-status")
    expect(status).to_have_text("Online")
    wait_live(page)
    page.evaluate("window.__marker = 1")

    page.once("dialog", lambda d: d.accept())
    page.get_by_role("button", name="Isolate").click()
    expect(status).to_have_text("Isolated")
    history = page.get_by_test_id("events")
    expect(history.locator("li").first).to_contain_text("isolate requested by oscar-operator")
    expect(page.locator("#agent-commands tbody tr").first).to_contain_text("Isolate")
    assert AgentCommand.objects.filter(agent_id=agent.id, type="isolate").count() == 1

    # The agent hears the command with its next heartbeat; isolation holds meanwhile.
    commands = agent.heartbeat(state="idle")["commands"]
    assert [c["type"] for c in commands] == ["isolate"]
    expect(page.locator("#agent-commands tbody tr").first).to_contain_text("Delivered")
    expect(status).to_have_text("Isolated")

    page.once("dialog", lambda d: d.accept())
    page.get_by_role("button", name="Release").click()
    expect(status).to_have_text("Online")
    expect(history.locator("li").first).to_contain_text("release requested by oscar-operator")
    expect(page.get_by_role("button", name="Isolate")).to_be_visible()
    assert page.evaluate("window.__marker") == 1, "the page was reloaded"


def test_a_dismissed_confirm_sends_nothing(page, live_url, agent_client):
    make_user("oscar-operator", Role.OPERATOR)
    agent = agent_client()
    agent.register("router-1")

    login(page, "oscar-operator")
    page.goto(f"/agents/{agent.id}/")
    posts = []
    page.on("request", lambda r: posts.append(r.url) if r.method == "POST" else None)
    dialogs = []
    page.once("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.get_by_role("button", name="Restart").click()
    page.evaluate("1")  # one round trip: a request the click started would be on its way
    assert dialogs == ["Restart router-1? Its current work is interrupted."]
    assert posts == []
    expect(page.locator("#agent-commands")).to_contain_text("No commands sent yet.")
    assert not AgentCommand.objects.filter(agent_id=agent.id).exists()


def test_viewer_sees_no_command_buttons_and_anonymous_is_sent_to_login(page, live_url, agent_client):
    make_user("vera-viewer", Role.VIEWER)
    agent = agent_client()
    agent.register("indexer-us-2")

    # Anonymous: every page sends them to the login form, and back after signing in.
    page.goto(f"/agents/{agent.id}/")
    expect(page).to_have_url(f"{live_url}/accounts/login/?next=/agents/{agent.id}/")
    expect(page.get_by_role("button", name="Sign in")).to_be_visible()
    # ... and the live socket does not open for them.
    outcome = page.evaluate(
        """() => new Promise(resolve => {
            const ws = new WebSocket(`ws://${location.host}/ws/live/`);
            ws.onopen = () => { resolve("open"); ws.close(); };
            ws.onclose = (e) => resolve("closed");
        })"""
    )
    assert outcome == "closed"

    page.get_by_label("Username").fill("vera-viewer")
    page.get_by_label("Password").fill("pw-vera-viewer")
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(f"{live_url}/agents/{agent.id}/")
    expect(page.get_by_test_id("agent-status")).to_have_text("Online")
    wait_live(page)

    # A viewer reads everything and can act on nothing.
    expect(page.get_by_role("group", name="Commands")).to_have_count(0)
    for name in ("Restart", "Drain", "Isolate", "Release"):
        expect(page.get_by_role("button", name=name)).to_have_count(0)
    csrf = next(c["value"] for c in page.context.cookies() if c["name"] == "csrftoken")
    response = page.request.post(f"/agents/{agent.id}/commands/isolate", headers={"X-CSRFToken": csrf, "HX-Request": "true"})
    assert response.status == 403
    assert not AgentCommand.objects.filter(agent_id=agent.id).exists()

    # Signing out ends the session.
    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(f"{live_url}/accounts/login/")
    page.goto("/")
    expect(page).to_have_url(f"{live_url}/accounts/login/?next=/")


def test_login_with_a_wrong_password_shows_the_error(page, live_url):
    make_user("oscar-operator", Role.OPERATOR)
    page.goto("/accounts/login/")
    page.get_by_label("Username").fill("oscar-operator")
    page.get_by_label("Password").fill("not-my-password")
    page.get_by_role("button", name="Sign in").click()

    expect(page.get_by_role("alert")).to_have_text("That username and password did not match. Try again.")
    expect(page).to_have_url(f"{live_url}/accounts/login/")
    expect(page.get_by_label("Username")).to_have_value("oscar-operator")
    expect(page.get_by_label("Password")).to_have_value("")

    page.get_by_label("Password").fill("pw-oscar-operator")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Fleet")).to_be_visible()
    expect(page.get_by_role("alert")).to_have_count(0)


def test_a_user_without_a_role_is_told_why_not_shown_an_empty_page(page, live_url):
    make_user("nora-norole", None)
    login(page, "nora-norole")
    expect(page.get_by_role("heading", name="Your account has no role yet")).to_be_visible()
    expect(page.locator("#fleet-table")).to_have_count(0)
    expect(page.locator("#live-indicator .label")).to_have_text("not live")
