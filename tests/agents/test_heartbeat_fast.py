"""The heartbeat as agents really reach it: through pulseguard.asgi and the group commit."""

import asyncio
import json
import uuid

import httpx
import pytest
from channels.db import database_sync_to_async

from apps.agents import services
from apps.agents.choices import CommandType
from apps.agents.models import Agent, AgentCommand, AgentEvent
from pulseguard.asgi import application
from tests.conftest import register

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.anyio]


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.fixture
async def http():
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=application), base_url="http://testserver") as client:
        yield client
    application.application_mapping["http"].close_connections()


def _fleet(n: int):
    _, key = services.enrollment_key_create(name="fast")
    return [register(key, name=f"fast-{i:03d}") for i in range(n)]


def _beat(http, agent, token, body=None, **headers):
    return http.post(
        f"/api/v1/agents/{agent.pk}/heartbeat",
        content=json.dumps(body if body is not None else {"state": "busy"}),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json", **headers},
    )


async def test_a_heartbeat_through_the_asgi_app_records_and_answers(http):
    [(agent, token)] = await database_sync_to_async(_fleet)(1)
    response = await _beat(http, agent, token, {"state": "busy", "readings": {"cpu_percent": 12.5}, "latency_ms": 8},
                           **{"X-Request-ID": "hb-1"})

    assert response.status_code == 200
    assert response.json() == {"commands": [], "heartbeat_interval_s": 15, "status": "online"}
    assert response.headers["x-request-id"] == "hb-1"
    stored = await database_sync_to_async(Agent.objects.get)(pk=agent.pk)
    assert stored.state == "busy" and stored.readings == {"cpu_percent": 12.5} and stored.last_latency_ms == 8


async def test_two_hundred_concurrent_heartbeats_all_land_with_their_own_commands(http):
    fleet = await database_sync_to_async(_fleet)(200)
    commanded = fleet[::10]
    for agent, _ in commanded:
        await database_sync_to_async(services.agent_command_issue)(agent=agent, type=CommandType.DRAIN)
    await database_sync_to_async(Agent.objects.filter(pk=fleet[1][0].pk).update)(status="stale")

    responses = await asyncio.gather(*[_beat(http, agent, token) for agent, token in fleet])

    assert [r.status_code for r in responses] == [200] * 200
    got = {str(agent.pk): r.json()["commands"] for (agent, _), r in zip(fleet, responses)}
    assert {a for a, cmds in got.items() if cmds} == {str(agent.pk) for agent, _ in commanded}
    assert all(len(cmds) == 1 and cmds[0]["type"] == "drain" and cmds[0]["issued_at"].endswith("Z")
               for cmds in got.values() if cmds)
    assert await database_sync_to_async(Agent.objects.filter(state="busy").count)() == 200
    assert await database_sync_to_async(AgentCommand.objects.filter(status="delivered").count)() == 20
    revived = await database_sync_to_async(
        AgentEvent.objects.filter(agent_id=fleet[1][0].pk, kind="status_changed", to_status="online").count)()
    assert revived == 1


async def test_the_same_agent_twice_at_once_is_written_twice_not_merged(http):
    [(agent, token)] = await database_sync_to_async(_fleet)(1)
    await database_sync_to_async(services.agent_command_issue)(agent=agent, type=CommandType.RESTART)

    first, second = await asyncio.gather(_beat(http, agent, token), _beat(http, agent, token))

    assert first.status_code == second.status_code == 200
    assert len(first.json()["commands"]) + len(second.json()["commands"]) == 1  # delivered exactly once


@pytest.mark.parametrize(
    "case, status, code",
    [
        ("no_token", 401, "authentication_required"),
        ("unknown_token", 401, "invalid_token"),
        ("other_agent", 403, "token_agent_mismatch"),
        ("unknown_agent", 404, "unknown_agent"),
        ("bad_uuid", 404, "not_found"),
        ("malformed", 400, "malformed_json"),
        ("nan", 400, "malformed_json"),
        ("invalid", 400, "invalid"),
        ("form", 415, "unsupported_media_type"),
        ("huge", 413, "body_too_large"),
    ],
)
async def test_bad_heartbeats_get_the_same_errors_as_the_rest_of_the_api(http, settings, case, status, code):
    (a, token_a), (b, token_b) = await database_sync_to_async(_fleet)(2)
    url = f"/api/v1/agents/{a.pk}/heartbeat"
    auth = {"Authorization": f"Bearer {token_a}", "Content-Type": "application/json"}
    requests = {
        "no_token": dict(url=url, content="{}", headers={"Content-Type": "application/json"}),
        "unknown_token": dict(url=url, content="{}", headers={**auth, "Authorization": "Bearer pga_nope"}),
        "other_agent": dict(url=url, content="{}", headers={**auth, "Authorization": f"Bearer {token_b}"}),
        "unknown_agent": dict(url=f"/api/v1/agents/{uuid.uuid4()}/heartbeat", content="{}", headers=auth),
        "bad_uuid": dict(url="/api/v1/agents/zzzzzzzz-zzzz-zzzz-zzzz-zzzzzzzzzzzz/heartbeat", content="{}", headers=auth),
        "malformed": dict(url=url, content="{nope", headers=auth),
        "nan": dict(url=url, content='{"latency_ms": NaN}', headers=auth),
        "invalid": dict(url=url, content=json.dumps({"state": "asleep", "extra": 1}), headers=auth),
        "form": dict(url=url, content="state=idle", headers={**auth, "Content-Type": "application/x-www-form-urlencoded"}),
        "huge": dict(url=url, content="x" * (settings.PULSEGUARD_MAX_BODY_BYTES + 1), headers=auth),
    }
    before = await database_sync_to_async(lambda: list(Agent.objects.order_by("name").values_list("last_heartbeat_at", "state")))()

    response = await http.post(**requests[case])

    assert response.status_code == status
    assert response.json()["error"]["code"] == code
    if case == "invalid":
        assert set(response.json()["error"]["fields"]) == {"state", "extra"}
    after = await database_sync_to_async(lambda: list(Agent.objects.order_by("name").values_list("last_heartbeat_at", "state")))()
    assert after == before


async def test_other_requests_still_reach_django(http):
    assert (await http.get("/healthz")).json() == {"status": "ok"}
    # GET on the heartbeat path is Django's (DRF) answer: method not allowed.
    [(agent, token)] = await database_sync_to_async(_fleet)(1)
    response = await http.get(f"/api/v1/agents/{agent.pk}/heartbeat", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code in (401, 405)
