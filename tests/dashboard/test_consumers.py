"""The live socket over the real channels-redis layer (no in-memory layer, no mocks)."""

from datetime import timedelta

import pytest
from channels.db import database_sync_to_async as sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.test import Client
from django.utils import timezone

from apps.agents import services
from apps.agents.events import FLEET_GROUP
from apps.agents.models import Agent
from apps.dashboard.consumers import LiveConsumer
from pulseguard.asgi import application
from tests.conftest import make_user, register

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.anyio]


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.fixture(autouse=True)
def fast_frames(settings):
    settings.PULSEGUARD_LIVE_COALESCE_MS = 100


@pytest.fixture(autouse=True)
def short_lived_connections():
    """Consumer threads close their connection after each call, so the test DB can be dropped."""
    from django.db import connections

    conf = connections.settings["default"]
    before = conf["CONN_MAX_AGE"]
    conf["CONN_MAX_AGE"] = 0
    yield
    conf["CONN_MAX_AGE"] = before


async def _connect(user, path="/ws/live/"):
    communicator = WebsocketCommunicator(LiveConsumer.as_asgi(), path)
    communicator.scope["user"] = user
    connected, code = await communicator.connect()
    return communicator, connected, code


async def _frames(communicator, *, quiet: float) -> list[str]:
    """Every frame until the socket has been quiet for `quiet` seconds.

    (receive_from's own timeout would cancel the consumer, so wait with receive_nothing.)
    """
    frames = []
    while not await communicator.receive_nothing(timeout=quiet):
        frames.append(await communicator.receive_from())
    return frames


async def test_anonymous_sockets_are_refused():
    communicator = WebsocketCommunicator(application, "/ws/live/", headers=[(b"origin", b"http://localhost")])
    connected, _ = await communicator.connect()
    assert not connected
    await communicator.disconnect()


async def test_a_session_user_connects_through_the_real_auth_stack():
    user = await sync_to_async(make_user)("sam", None)
    await sync_to_async(_grant)(user, "viewer")
    client = Client()
    await sync_to_async(client.force_login)(user)
    cookie = f"sessionid={client.cookies['sessionid'].value}".encode()
    communicator = WebsocketCommunicator(
        application, "/ws/live/", headers=[(b"origin", b"http://localhost"), (b"cookie", cookie)]
    )
    connected, _ = await communicator.connect()
    assert connected
    await communicator.disconnect()


async def test_users_without_a_role_are_refused():
    user = await sync_to_async(make_user)("norole", None)
    communicator, connected, code = await _connect(user)
    assert not connected and code == 4403
    await communicator.disconnect()


async def test_a_status_change_is_pushed_as_an_oob_row():
    user = await sync_to_async(make_user)("vic", None)
    await sync_to_async(_grant)(user, "viewer")
    agent = await sync_to_async(_registered)("stale-soon")
    communicator, connected, _ = await _connect(user)
    assert connected

    await sync_to_async(services.agents_check_heartbeats)(now=timezone.now() + timedelta(hours=1))

    frame = await communicator.receive_from(timeout=5)
    assert f'id="agent-row-{agent.pk}"' in frame and 'hx-swap-oob="outerHTML"' in frame
    assert 'data-status="stale"' in frame
    assert 'id="fleet-counts"' in frame and 'data-testid="count-stale">1<' in frame
    await communicator.disconnect()


async def test_a_burst_of_changes_is_coalesced_into_few_frames():
    user = await sync_to_async(make_user)("vic", None)
    await sync_to_async(_grant)(user, "viewer")
    agents = [await sync_to_async(_registered)(f"a{i}") for i in range(5)]
    communicator, _, _ = await _connect(user)
    layer = get_channel_layer()

    # 100 events in a burst, as a large fleet would produce them.
    for i in range(100):
        await layer.group_send(FLEET_GROUP, {"type": "agents.changed", "ids": [str(agents[i % 5].pk)], "added": False})

    frames = await _frames(communicator, quiet=0.5)
    # One frame per coalescing window at most: 1-3 frames on an idle machine. A loaded one
    # delivers the burst over more windows, so the bound is loose; without coalescing it
    # would be 100 frames.
    assert 1 <= len(frames) <= 20, len(frames)
    pushed = "".join(frames)
    assert all(f'id="agent-row-{a.pk}"' in pushed for a in agents)
    assert frames[-1].count('id="fleet-counts"') == 1
    await communicator.disconnect()


async def test_an_agent_page_hears_only_its_agent():
    user = await sync_to_async(make_user)("vic", None)
    await sync_to_async(_grant)(user, "viewer")
    mine = await sync_to_async(_registered)("mine")
    other = await sync_to_async(_registered)("other")
    communicator, _, _ = await _connect(user, f"/ws/live/?agent={mine.pk}")

    await sync_to_async(_flip_state)(other)
    assert await communicator.receive_nothing(timeout=0.5)

    await sync_to_async(_flip_state)(mine)
    frame = await communicator.receive_from(timeout=5)
    assert 'id="agent-head"' in frame and 'id="agent-events"' in frame
    assert "mine" in frame and "other" not in frame
    await communicator.disconnect()


async def test_a_user_who_loses_their_role_is_disconnected():
    user = await sync_to_async(make_user)("vic", None)
    await sync_to_async(_grant)(user, "viewer")
    agent = await sync_to_async(_registered)("x")
    communicator, _, _ = await _connect(user)

    await sync_to_async(user.groups.clear)()
    await sync_to_async(_flip_state)(agent)

    output = await communicator.receive_output(timeout=5)
    assert output["type"] == "websocket.close" and output["code"] == 4403
    await communicator.disconnect()


# --- helpers (sync, run through sync_to_async) ----------------------------------------

def _grant(user, group):
    from django.contrib.auth.models import Group

    user.groups.add(Group.objects.get(name=group))


def _registered(name):
    from apps.agents.models import EnrollmentKey

    key = getattr(_registered, "key", None)
    if key is None or not EnrollmentKey.objects.exists():
        _, key = services.enrollment_key_create(name="live")
        _registered.key = key
    agent, token = register(key, name=name)
    agent.token = token
    return agent


def _flip_state(agent):
    state = "busy" if Agent.objects.get(pk=agent.pk).state == "idle" else "idle"
    services.agent_heartbeat_record(agent_id=agent.pk, token=agent.token, state=state)
