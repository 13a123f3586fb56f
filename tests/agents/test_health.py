from datetime import timedelta

import pytest
from django.utils import timezone

from apps.agents.health import health_score


@pytest.fixture(autouse=True)
def _intervals(settings):
    settings.PULSEGUARD_HEARTBEAT_INTERVAL = 10
    settings.PULSEGUARD_STALE_AFTER = 115  # grace 15 s → zero at 115 s: 1 point per second


@pytest.mark.parametrize(
    "age_s, latency_ms, status, expected",
    [
        (0, None, "online", 100),
        (15, None, "online", 100),
        (65, None, "late", 50),
        (115, None, "stale", 0),
        (500, None, "stale", 0),
        (5, 250, "online", 100),
        (5, 5000, "online", 50),
        (5, 60000, "online", 50),
        (65, 2625, "late", 38),
        (0, None, "offline", 0),
    ],
)
def test_health_score_formula(age_s, latency_ms, status, expected):
    now = timezone.now()
    score = health_score(status=status, last_heartbeat_at=now - timedelta(seconds=age_s), last_latency_ms=latency_ms, now=now)
    assert score == expected


def test_an_agent_never_heard_from_scores_zero():
    assert health_score(status="online", last_heartbeat_at=None, last_latency_ms=None, now=timezone.now()) == 0
