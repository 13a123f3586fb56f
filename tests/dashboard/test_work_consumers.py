"""Task events over the real channels-redis layer: the task list and a task's page follow them."""

import pytest
from channels.db import database_sync_to_async as sync_to_async

from apps.security.roles import Role
from apps.workflows import services
from apps.workflows.events import tasks_changed
from tests.conftest import make_user
from tests.dashboard.test_consumers import _connect, _frames, anyio_backend, fast_frames, short_lived_connections  # noqa: F401

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.anyio]


def _create(kind="report.build"):
    task, _ = services.task_create(kind=kind)
    tasks_changed([task.pk], added=True)
    return task


def _cancel(task_id):
    services.task_cancel(task_id=task_id)
    tasks_changed([task_id])


async def test_the_task_list_gets_counts_rows_and_a_reread_hint_for_new_tasks():
    user = await sync_to_async(make_user)("vic", Role.VIEWER)
    communicator, connected, _ = await _connect(user, "/ws/live/?page=tasks")
    assert connected
    task = await sync_to_async(_create)()
    html = "".join(await _frames(communicator, quiet=0.5))
    assert 'id="task-counts"' in html and 'data-testid="count-queued">1<' in html
    assert f'id="task-row-{task.pk}"' in html and 'data-refresh="task-table"' in html

    await sync_to_async(_cancel)(task.pk)
    html = "".join(await _frames(communicator, quiet=0.5))
    assert 'data-testid="count-cancelled">1<' in html and "data-refresh" not in html
    await communicator.disconnect()


async def test_a_task_page_hears_only_its_own_task_and_the_fleet_page_none():
    user = await sync_to_async(make_user)("vic", Role.VIEWER)
    mine = await sync_to_async(_create)()
    task_page, connected, _ = await _connect(user, f"/ws/live/?task={mine.pk}")
    fleet_page, _, _ = await _connect(user, "/ws/live/")
    assert connected

    await sync_to_async(_create)("other.kind")
    assert await _frames(task_page, quiet=0.4) == []
    await sync_to_async(_cancel)(mine.pk)
    html = "".join(await _frames(task_page, quiet=0.5))
    assert 'id="task-head"' in html and "Cancelled" in html and 'id="task-body"' in html
    assert await _frames(fleet_page, quiet=0.2) == []
    await task_page.disconnect()
    await fleet_page.disconnect()
