"""Live events of the agents app: the group they go to and what they carry.

Payloads carry ids only; consumers re-read the rows (with the reader's permissions)
when they render, so a burst of events for one agent costs one render, and a mass
transition of the whole fleet is one message, not one per agent.
"""

from typing import TypedDict

from apps.core.live import publish_on_commit

FLEET_GROUP = "fleet"


class AgentsChanged(TypedDict):
    type: str  # "agents.changed"
    ids: list[str]
    added: bool  # new agents: lists reload their rows rather than patch them


def agents_changed(agent_ids, *, added: bool = False) -> None:
    """Tell every open fleet and agent page that these agents changed."""
    ids = [str(agent_id) for agent_id in agent_ids]
    if ids:
        publish_on_commit(FLEET_GROUP, AgentsChanged(type="agents.changed", ids=ids, added=added))
