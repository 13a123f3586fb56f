"""HTML fragments the live socket pushes; the same partials the pages include."""

from django.template.loader import render_to_string

from apps.agents import selectors
from apps.security.roles import Role, user_has_role


def _ctx(user, **extra) -> dict:
    return {"can_operate": user_has_role(user, Role.OPERATOR), "oob": True, **extra}


# A page shows at most this many rows; past it, a frame asks the page to re-read its list.
MAX_ROWS_PER_FRAME = 100


def fleet_frame(*, agent_ids, refresh_list: bool, user) -> str:
    parts = [render_to_string("dashboard/partials/fleet_counts.html", _ctx(user, counts=selectors.fleet_counts()))]
    if len(agent_ids) > MAX_ROWS_PER_FRAME:
        # A mass transition (the whole fleet going stale): one list re-read per browser is
        # cheaper than pushing thousands of rows it mostly does not show.
        refresh_list = True
    else:
        for agent in selectors.agents_with_health(selectors.agent_rows(agent_ids=agent_ids)):
            parts.append(render_to_string("dashboard/partials/agent_row.html", _ctx(user, agent=agent)))
    if refresh_list:
        parts.append('<div id="live-refresh" hx-swap-oob="true" data-refresh="fleet-table"></div>')
    return "".join(parts)


def agent_frame(*, agent_id, user) -> str:
    agent = selectors.agent_get(agent_id=agent_id)
    if agent is None:
        return ""
    return render_to_string("dashboard/partials/agent_live.html", _ctx(user, **agent_context(agent)))


def agent_context(agent) -> dict:
    return {
        "agent": selectors.agents_with_health([agent])[0],
        "events": selectors.agent_event_list(agent_id=agent.pk),
        "commands": selectors.agent_command_list(agent_id=agent.pk),
    }
