"""Circuit breaker per agent, derived from its attempts (no counters kept on the side).

    closed     fewer than PULSEGUARD_BREAKER_FAILURES failures in a row: work as usual
    open       that many in a row, the last less than PULSEGUARD_BREAKER_COOLDOWN s ago: no work
    half_open  tripped, cooldown over: one trial task at a time; a success closes it,
               a failure opens it again for another cooldown

"In a row" reads the agent's latest finished attempts (cancelled ones do not count), so a
single success resets the streak. Operators (or auto-heal) reset a breaker by setting
Agent.breaker_reset_at: attempts before it no longer count.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection
from django.utils import timezone

from apps.agents.models import Agent

FAILED_OUTCOMES = ("failed", "timed_out", "lease_lost")

# For agent row `a`: the last N finished attempts -> (n, failures, last_end). Used by the
# claim statement and by breaker_states(); %(breaker_n)s is the threshold.
LATEST_SQL = """
SELECT count(*) AS n, count(*) FILTER (WHERE outcome IN ('failed', 'timed_out', 'lease_lost')) AS failures,
       max(ended_at) AS last_end
FROM (
    SELECT outcome, ended_at FROM workflows_taskattempt t
    WHERE t.agent_id = a.id AND t.outcome NOT IN ('running', 'cancelled')
      AND t.ended_at > COALESCE(a.breaker_reset_at, '-infinity'::timestamptz)
    ORDER BY t.ended_at DESC LIMIT %(breaker_n)s
) latest
"""


def params() -> dict:
    return {"breaker_n": settings.PULSEGUARD_BREAKER_FAILURES,
            "breaker_cooldown": float(settings.PULSEGUARD_BREAKER_COOLDOWN)}


@dataclass(frozen=True)
class BreakerState:
    state: str  # closed | open | half_open
    failures_in_a_row: int
    closes_at: datetime | None  # when an open breaker lets a trial through

    @property
    def is_open(self) -> bool:
        return self.state == "open"


def breaker_states(*, agent_ids) -> dict[str, BreakerState]:
    """Breaker state of each agent, in one query."""
    ids = [str(i) for i in agent_ids]
    if not ids:
        return {}
    p = params()
    with connection.cursor() as cur:
        cur.execute(
            f"SELECT a.id::text, b.n, b.failures, b.last_end FROM agents_agent a "
            f"LEFT JOIN LATERAL ({LATEST_SQL}) b ON true WHERE a.id = ANY(%(ids)s::uuid[])",
            {**p, "ids": ids},
        )
        rows = cur.fetchall()
    now = timezone.now()
    cooldown = timedelta(seconds=p["breaker_cooldown"])
    out = {}
    for agent_id, n, failures, last_end in rows:
        tripped = n == p["breaker_n"] and failures == n
        if not tripped:
            out[agent_id] = BreakerState("closed", _streak(failures, n), None)
        elif last_end + cooldown > now:
            out[agent_id] = BreakerState("open", failures, last_end + cooldown)
        else:
            out[agent_id] = BreakerState("half_open", failures, None)
    return out


def _streak(failures: int, n: int) -> int:
    # Below the threshold only "all failed" is a streak worth showing exactly.
    return failures if failures == n else 0


def breaker_reset(*, agent_ids=None) -> int:
    """Close breakers (all agents when agent_ids is None); returns how many were tripped."""
    states = breaker_states(agent_ids=agent_ids if agent_ids is not None else Agent.objects.values_list("pk", flat=True))
    tripped = [agent_id for agent_id, s in states.items() if s.state != "closed"]
    if tripped:
        Agent.objects.filter(pk__in=tripped).update(breaker_reset_at=timezone.now())
    return len(tripped)


def breakers_reset_all() -> int:
    return breaker_reset()
