"""What an operator can do about each failure pattern (docs/coordination.md lists them).

Each error type has a piece of guidance; the figures of the window (how many attempts,
how many agents, which agents and kinds most) are filled in so the text points at where
to look first. Whether the failures sit on one agent or spread over many is the first
clue an operator needs: one agent points at its host, many at a shared dependency.
"""

from __future__ import annotations

from apps.workflows.choices import ErrorType

_GUIDANCE = {
    ErrorType.TIMEOUT: (
        "Attempts ran past their time limit. If the work legitimately takes that long, raise the task's "
        "attempt_timeout_s (or overall_timeout_s); otherwise look for a slow dependency on {where}, or split "
        "the work of {kinds} into smaller tasks."
    ),
    ErrorType.CONNECTION: (
        "Agents could not reach something they depend on (network, DNS, a provider endpoint, a database). "
        "Check connectivity from {where}. {spread}"
    ),
    ErrorType.RATE_LIMIT: (
        "A provider is throttling the fleet: lower concurrency on the affected agents, add a provider key or "
        "raise the quota, or spread {kinds} over time; {n_agents} hit it, {where} most. Retries back off on "
        "their own, but a steady rate means the fleet asks for more than the quota allows."
    ),
    ErrorType.SERIALIZATION: (
        "Payloads or results could not be encoded or decoded; these attempts are not retried. Check whoever "
        "creates {kinds} against the skill's payload schema, and the SDK version on {where}."
    ),
    ErrorType.LEASE_LOST: (
        "Agents die or stall mid-task and stop renewing their lease: check {where} for crashes, OOM kills and "
        "heartbeat gaps, and that they renew in every heartbeat; raise attempt_timeout_s if tasks of {kinds} "
        "legitimately run longer than their lease. Auto-heal requeues what they held."
    ),
    ErrorType.AGENT_ERROR: (
        "The agent's own code failed while running the task: read the examples. {spread} Compare the "
        "versions of {where} with the rest of the fleet; isolate an agent that keeps failing."
    ),
    ErrorType.REJECTED: (
        "Agents refused the work (input they do not accept, a policy, a missing capability); rejections are "
        "not retried. Fix the payload or required_capabilities of {kinds} so they reach agents that accept them."
    ),
    ErrorType.RESOURCE: (
        "Agents ran out of memory, disk or GPU memory. Raise the vram_mb estimate of {kinds} so placement "
        "picks a larger device, lower per-agent concurrency on {where}, or add capacity."
    ),
    ErrorType.CANCELLED: (
        "Attempts reported as failed because they were cancelled. If nobody meant to, check the audit log for "
        "who cancelled, and whether {where} report a shutdown as a failure."
    ),
    ErrorType.UNKNOWN: (
        "These failures carry no error type, so PulseGuard cannot say more: make agents report one (timeout, "
        "connection, rate_limit, …) when they fail a task. The example messages are the best clue; {where} "
        "report most of them."
    ),
}


def _names(items: list[dict], key: str, fallback: str) -> str:
    names = [str(i[key]) for i in items if i.get(key)]
    if not names:
        return fallback
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def recommendation_for(error_type: str, *, agents: list[dict], kinds: list[dict], agents_affected: int) -> str:
    """Guidance for one pattern, naming the agents and kinds it hit most."""
    if agents_affected == 1:
        spread = "It is all on one agent: look at that host before anything shared."
    elif agents_affected > 1:
        spread = f"It is spread over {agents_affected} agents: suspect what they share before any one of them."
    else:
        spread = ""
    text = _GUIDANCE.get(error_type, _GUIDANCE[ErrorType.UNKNOWN]).format(
        where=_names(agents, "name", "the affected agents"),
        kinds=_names(kinds, "kind", "these tasks"),
        n_agents=f"{agents_affected} agent{'s' if agents_affected != 1 else ''}",
        spread=spread,
    )
    return " ".join(text.split())
