"""Health score, 0–100: how much an operator should trust this agent right now.

    score = 100 × freshness × latency × work

- freshness is 1 while the last heartbeat is at most 1.5 intervals old, then falls
  linearly to 0 at PULSEGUARD_STALE_AFTER; an agent that said goodbye (offline) scores 0.
- latency is 1 while the round trip the agent last measured is ≤ 250 ms, then falls
  linearly to 0.5 at 5 s and stays there (slow is bad, but not as bad as silent).

- work is 1 until the agent has finished WORK_MIN_ATTEMPTS attempts in the last 24 h,
  then 0.5 + 0.5 × its success rate over them (an agent failing everything it touches
  is half as trustworthy as a healthy one, however fresh its heartbeat).

See docs/health.md.
"""

from datetime import datetime

from django.conf import settings

from apps.agents.choices import AgentStatus

LATENCY_GOOD_MS = 250.0
LATENCY_BAD_MS = 5000.0
WORK_MIN_ATTEMPTS = 5


def health_score(
    *, status: str, last_heartbeat_at: datetime | None, last_latency_ms: float | None, now: datetime,
    finished_attempts: int = 0, succeeded_attempts: int = 0,
) -> int:
    if status == AgentStatus.OFFLINE or last_heartbeat_at is None:
        return 0
    interval = settings.PULSEGUARD_HEARTBEAT_INTERVAL
    stale_after = settings.PULSEGUARD_STALE_AFTER
    age = max((now - last_heartbeat_at).total_seconds(), 0.0)
    grace = 1.5 * interval
    if age <= grace:
        freshness = 1.0
    elif age >= stale_after:
        freshness = 0.0
    else:
        freshness = 1.0 - (age - grace) / (stale_after - grace)
    latency = 1.0
    if last_latency_ms is not None and last_latency_ms > LATENCY_GOOD_MS:
        over = min((last_latency_ms - LATENCY_GOOD_MS) / (LATENCY_BAD_MS - LATENCY_GOOD_MS), 1.0)
        latency = 1.0 - 0.5 * over
    work = 1.0
    if finished_attempts >= WORK_MIN_ATTEMPTS:
        work = 0.5 + 0.5 * succeeded_attempts / finished_attempts
    return round(100 * freshness * latency * work)
