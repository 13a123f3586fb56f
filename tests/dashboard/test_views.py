import uuid

import pytest

from apps.agents.models import Agent, AgentCommand
from tests.conftest import register

pytestmark = pytest.mark.django_db


def test_pages_need_a_login(client, agent_and_token):
    agent, _ = agent_and_token
    for url in ["/", f"/agents/{agent.pk}/"]:
        response = client.get(url)
        assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")


def test_a_user_without_a_role_is_refused(client, nobody):
    client.force_login(nobody)
    assert client.get("/").status_code == 403


def test_the_fleet_page_lists_agents_with_counts(client, viewer, enrollment_key):
    register(enrollment_key, name="alpha", host={"hostname": "alpha.local", "gpus": [{"index": 0, "name": "NVIDIA L4"}]})
    register(enrollment_key, name="beta")
    Agent.objects.filter(name="beta").update(status="stale")
    client.force_login(viewer)

    html = client.get("/").content.decode()

    assert "alpha" in html and "beta" in html and "NVIDIA L4" in html
    assert 'data-testid="count-total">2<' in html
    assert 'data-testid="count-stale">1<' in html
    assert 'ws-connect="/ws/live/"' in html
    assert "Restart" not in html  # commands live on the agent page, for operators


def test_htmx_gets_only_the_table_partial_filtered(client, viewer, enrollment_key):
    register(enrollment_key, name="alpha")
    register(enrollment_key, name="beta")
    Agent.objects.filter(name="beta").update(status="stale")
    client.force_login(viewer)

    response = client.get("/?status=stale", HTTP_HX_REQUEST="true", HTTP_HX_TARGET="fleet-table")

    html = response.content.decode()
    assert html.lstrip().startswith('<div id="fleet-table"')
    assert "beta" in html and ">alpha<" not in html
    assert "<html" not in html


def test_a_bad_filter_shows_an_error_not_a_crash(client, viewer, agent_and_token):
    client.force_login(viewer)
    response = client.get("/?status=bogus")
    assert response.status_code == 200 and "Invalid filter" in response.content.decode()


def test_the_agent_page_shows_history_and_buttons_only_to_operators(client, viewer, operator, agent_and_token):
    agent, _ = agent_and_token
    client.force_login(viewer)
    viewer_html = client.get(f"/agents/{agent.pk}/").content.decode()
    client.force_login(operator)
    operator_html = client.get(f"/agents/{agent.pk}/").content.decode()

    assert "Registered" in viewer_html and f'ws-connect="/ws/live/?agent={agent.pk}"' in viewer_html
    assert ">Isolate<" not in viewer_html
    assert ">Isolate<" in operator_html


def test_operators_isolate_from_the_page_and_viewers_cannot(client, viewer, operator, agent_and_token):
    agent, _ = agent_and_token
    url = f"/agents/{agent.pk}/commands/isolate"

    client.force_login(viewer)
    assert client.post(url).status_code == 403
    assert AgentCommand.objects.count() == 0

    client.force_login(operator)
    response = client.post(url, HTTP_HX_REQUEST="true")
    assert response.status_code == 200
    assert 'hx-swap-oob="true"' in response.content.decode()
    assert Agent.objects.get(pk=agent.pk).status == "isolated"
    assert AgentCommand.objects.get().issued_by == operator


def test_an_unknown_command_is_400(client, operator, agent_and_token):
    agent, _ = agent_and_token
    client.force_login(operator)
    assert client.post(f"/agents/{agent.pk}/commands/explode").status_code == 400
    assert AgentCommand.objects.count() == 0


def test_the_login_page_renders(client):
    response = client.get("/accounts/login/")
    assert response.status_code == 200 and b"Sign in" in response.content


def test_a_mass_transition_pushes_counts_and_a_refresh_hint_not_thousands_of_rows(viewer, enrollment_key):
    from apps.dashboard import render

    agents = [register(enrollment_key, name=f"m{i}")[0] for i in range(3)]
    ids = [str(a.pk) for a in agents] + [str(uuid.uuid4()) for _ in range(render.MAX_ROWS_PER_FRAME)]

    frame = render.fleet_frame(agent_ids=ids, refresh_list=False, user=viewer)

    assert 'id="fleet-counts"' in frame and 'id="live-refresh"' in frame
    assert "agent-row-" not in frame
