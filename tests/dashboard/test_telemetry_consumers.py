"""The fleet GPU page's live socket and the agent page's telemetry feed, over the real
channels-redis layer."""

import pytest
from channels.db import database_sync_to_async as sync_to_async
from django.utils import timezone

from apps.metrics import services as metrics_services
from tests.conftest import make_user, register
from tests.dashboard.test_consumers import _connect, _frames, _grant

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.anyio]

GiB = 2**30


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.fixture(autouse=True)
def fast_frames(settings):
    settings.PULSEGUARD_LIVE_COALESCE_MS = 100
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # users are made in every test


@pytest.fixture(autouse=True)
def short_lived_connections():
    from django.db import connections

    conf = connections.settings["default"]
    before = conf["CONN_MAX_AGE"]
    conf["CONN_MAX_AGE"] = 0
    yield
    conf["CONN_MAX_AGE"] = before


async def _all_frames(communicator) -> str:
    """The first frame (the first render may be slow), then whatever follows it closely."""
    first = await communicator.receive_from(timeout=5)
    return first + "".join(await _frames(communicator, quiet=0.5))


def _gpu_worker(name):
    from apps.agents import services

    _, key = services.enrollment_key_create(name=f"key-{name}")
    agent, _ = register(key, name=name, kind="worker", host={
        "hostname": name, "gpus": [{"index": i, "name": "NVIDIA A100-SXM4-80GB", "memory_total_bytes": 80 * GiB} for i in range(2)]})
    return agent


def _report(agent, util, temp):
    now = timezone.now().isoformat()
    metrics_services.metrics_ingest(agent_id=agent.pk, samples=[
        {"kind": "host", "ts": now, "cpu_percent": 50.0},
        *[{"kind": "gpu", "ts": now, "index": i, "utilization_percent": util, "temperature_c": temp} for i in range(2)],
    ])


async def test_the_gpu_page_gets_its_rows_summary_and_feed_when_a_reading_lands():
    user = await sync_to_async(make_user)("vic", None)
    await sync_to_async(_grant)(user, "viewer")
    agent = await sync_to_async(_gpu_worker)("trainer-9")
    communicator, connected, _ = await _connect(user, "/ws/live/?page=gpus")
    assert connected

    await sync_to_async(_report)(agent, 88.0, 83.0)

    frame = await _all_frames(communicator)
    assert f'<template><tbody id="gpu-agent-{agent.pk}"' in frame
    assert frame.count('class="gpu-row"') == 2 and "83 °C" in frame
    assert 'id="gpu-summary"' in frame and 'data-testid="gpu-hot">2<' in frame
    assert 'id="telemetry-feed"' in frame and "DCGM_FI_DEV_GPU_UTIL" in frame
    assert 'id="agent-row-' not in frame and 'id="fleet-counts"' not in frame  # not the fleet page's frame
    await communicator.disconnect()


async def test_the_gpu_page_stops_when_the_role_is_taken_away():
    user = await sync_to_async(make_user)("vic", None)
    await sync_to_async(_grant)(user, "viewer")
    agent = await sync_to_async(_gpu_worker)("trainer-9")
    communicator, _, _ = await _connect(user, "/ws/live/?page=gpus")

    await sync_to_async(user.groups.clear)()
    await sync_to_async(_report)(agent, 10.0, 40.0)

    output = await communicator.receive_output(timeout=5)
    assert output["type"] == "websocket.close" and output["code"] == 4403
    await communicator.disconnect()


async def test_an_agent_page_frame_carries_the_new_reading_for_its_charts():
    user = await sync_to_async(make_user)("vic", None)
    await sync_to_async(_grant)(user, "viewer")
    agent = await sync_to_async(_gpu_worker)("trainer-9")
    communicator, _, _ = await _connect(user, f"/ws/live/?agent={agent.pk}")

    await sync_to_async(_report)(agent, 77.0, 66.0)

    frame = await _all_frames(communicator)
    assert 'id="telemetry-feed"' in frame and "&quot;DCGM_FI_DEV_GPU_UTIL/1&quot;:77.0" in frame
    assert 'id="gpu-devices"' in frame and "66 °C" in frame
    await communicator.disconnect()
