"""Live events of the task layer: the group they go to and what they carry.

Payloads carry task ids only; the dashboard's consumer re-reads the rows (with the
reader's permissions) when it renders, so a burst of changes to one task costs one
render. `added` tells lists to re-read themselves (a new row has no place to swap into).
"""

from typing import TypedDict

from apps.core.live import publish_on_commit

TASKS_GROUP = "tasks"
# Past this many ids a message says "everything changed": pages re-read their list.
MAX_IDS = 500


class TasksChanged(TypedDict):
    type: str  # "tasks.changed"
    ids: list[int]
    added: bool


def tasks_changed(task_ids, *, added: bool = False) -> None:
    """Tell every open task page that these tasks changed (after the transaction commits)."""
    ids = [int(task_id) for task_id in task_ids]
    if not ids:
        return
    if len(ids) > MAX_IDS:
        ids, added = ids[:MAX_IDS], True
    publish_on_commit(TASKS_GROUP, TasksChanged(type="tasks.changed", ids=ids, added=added))
