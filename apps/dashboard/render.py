"""HTML fragments the live socket pushes; the same partials the pages include."""

from django.template.loader import render_to_string

from apps.agents import selectors
from apps.dashboard import telemetry, work
from apps.metrics import selectors as metrics
from apps.security.roles import Role, user_has_role


def _ctx(user, **extra) -> dict:
    return {"can_operate": user_has_role(user, Role.OPERATOR), "oob": True, **extra}


# A page shows at most this many rows; past it, a frame asks the page to re-read its list.
MAX_ROWS_PER_FRAME = 100


def _refresh_hint(list_id: str) -> str:
    return f'<div id="live-refresh" hx-swap-oob="true" data-refresh="{list_id}"></div>'


def fleet_frame(*, agent_ids, refresh_list: bool, user) -> str:
    parts = [render_to_string("dashboard/partials/fleet_counts.html", _ctx(user, counts=selectors.fleet_counts()))]
    if len(agent_ids) > MAX_ROWS_PER_FRAME:
        # A mass transition (the whole fleet going stale): one list re-read per browser is
        # cheaper than pushing thousands of rows it mostly does not show.
        refresh_list = True
    else:
        rows = telemetry.agents_with_telemetry(selectors.agents_with_health(selectors.agent_rows(agent_ids=agent_ids)))
        for agent in rows:
            parts.append(render_to_string("dashboard/partials/agent_row.html", _ctx(user, agent=agent)))
    if refresh_list:
        parts.append(_refresh_hint("fleet-table"))
    return "".join(parts)


def agent_frame(*, agent_id, user) -> str:
    agent = selectors.agent_get(agent_id=agent_id)
    if agent is None:
        return ""
    return render_to_string("dashboard/partials/agent_live.html", _ctx(user, **agent_context(agent)))


def agent_context(agent, *, gpu_rows: bool = True) -> dict:
    """What the agent page and its live frame show; `gpu_rows` adds the GPU tab's device table."""
    agent = selectors.agents_with_health([agent])[0]
    return {
        "agent": agent,
        "events": selectors.agent_event_list(agent_id=agent.pk),
        "commands": selectors.agent_command_list(agent_id=agent.pk),
        "gpu_rows": telemetry.agent_gpu_rows(agent) if gpu_rows and agent.gpus else [],
        "feed": telemetry.feed_attrs(telemetry.agent_feed(agent)),
        "breaker": work.agent_breaker(agent_id=agent.pk),
        "recent_attempts": work.agent_recent_attempts(agent_id=agent.pk),
    }


def gpu_page_context(*, q: str = "") -> dict:
    """The fleet GPU page: fleet-wide summary, and the devices of the agents matching q
    (a name, hostname or model fragment, or a label as key=value)."""
    devices = metrics.fleet_gpus()
    shown = devices
    if q:
        ids = set(_matching_agent_ids(q))
        shown = [d for d in devices if d.agent_id in ids]
    summary = telemetry.gpu_summary(devices)
    return {
        "summary": summary,
        "groups": telemetry.gpu_groups(shown),
        "feed": telemetry.feed_attrs(telemetry.fleet_gpu_feed(summary)),
    }


def _matching_agent_ids(q: str) -> list[str]:
    filters = {"label": q} if "=" in q else {"q": q}
    return [str(pk) for pk in selectors.agent_list(filters=filters).values_list("pk", flat=True)]


def gpu_frame(*, agent_ids, refresh_list: bool, user) -> str:
    devices = metrics.fleet_gpus()
    summary = telemetry.gpu_summary(devices)
    parts = [
        render_to_string("dashboard/partials/gpu_summary.html", _ctx(user, summary=summary)),
        render_to_string("dashboard/partials/telemetry_feed.html",
                         _ctx(user, feed=telemetry.feed_attrs(telemetry.fleet_gpu_feed(summary)))),
    ]
    if len(agent_ids) > MAX_ROWS_PER_FRAME:
        refresh_list = True
    else:
        wanted = {str(a) for a in agent_ids}
        for group in telemetry.gpu_groups([d for d in devices if d.agent_id in wanted]):
            parts.append(render_to_string("dashboard/partials/gpu_group.html", _ctx(user, group=group)))
    if refresh_list:
        parts.append(_refresh_hint("gpu-table"))
    return "".join(parts)


def tasks_frame(*, task_ids, refresh_list: bool, user) -> str:
    """The task list: the state counters, the rows of the tasks that changed (rows not on
    the page find no target and are dropped), and a re-read hint when tasks were added."""
    parts = [render_to_string("dashboard/partials/task_counts.html", _ctx(user, counts=work.task_state_counts()))]
    if len(task_ids) > MAX_ROWS_PER_FRAME:
        refresh_list = True
    else:
        for task in work.task_rows_by_id(task_ids):
            parts.append(render_to_string("dashboard/partials/task_row.html", _ctx(user, task=task)))
    if refresh_list:
        parts.append(_refresh_hint("task-table"))
    return "".join(parts)


def task_frame(*, task_id, user) -> str:
    """One task's page: its state, facts and attempts (the buttons stay as they are)."""
    from apps.workflows import selectors as task_selectors

    task = task_selectors.task_get(task_id=task_id)
    if task is None:
        return ""
    return render_to_string("dashboard/partials/task_live.html",
                            _ctx(user, task=task, attempts=task_selectors.task_attempts(task_id=task_id)))
