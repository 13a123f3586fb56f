"""Coordination figures on a realistic day of attempts: success rate, trend, failure
patterns, diagnostics, and their API. Real PostgreSQL; time is fixed with time_machine."""

from datetime import UTC, datetime, timedelta

import pytest
import time_machine

from apps.agents.models import Agent
from apps.workflows import coordination, services
from apps.workflows.choices import ErrorType
from apps.workflows.coordination import trend_of, window_make
from apps.workflows.recommendations import recommendation_for
from apps.workflows.models import Task, TaskAttempt
from tests.conftest import register, token_client

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
_TASK_STATE = {"succeeded": "succeeded", "failed": "failed", "timed_out": "failed", "lease_lost": "failed",
               "cancelled": "cancelled"}


@pytest.fixture
def at_noon():
    with time_machine.travel(NOW, tick=False):
        yield


def _history(agent, kind, outcome, n, *, hours_ago, error_type="", message=""):
    """n attempts that ended `hours_ago` hours before NOW (one second apart), one task each."""
    tasks = Task.objects.bulk_create([
        Task(kind=kind, runner="agent", resource_class="cpu", state=_TASK_STATE[outcome], agent=agent)
        for _ in range(n)
    ])
    end = NOW - timedelta(hours=hours_ago)
    return TaskAttempt.objects.bulk_create([
        TaskAttempt(task=t, number=1, agent=agent, started_at=end - timedelta(seconds=30),
                    ended_at=end + timedelta(seconds=i), outcome=outcome, error_type=error_type,
                    error_message=f"{message} #{i}" if message else "")
        for i, t in enumerate(tasks)
    ])


@pytest.fixture
def day(at_noon, enrollment_key):
    """alpha is steady, bravo falls apart in the second half of the day, charlie barely ran."""
    alpha = register(enrollment_key, "alpha")[0]
    bravo = register(enrollment_key, "bravo")[0]
    charlie = register(enrollment_key, "charlie")[0]
    review, scrape = "code.review", "web.scrape"
    _history(alpha, review, "succeeded", 20, hours_ago=18)
    _history(alpha, review, "failed", 1, hours_ago=18, error_type="timeout", message="deadline of 300 s exceeded")
    _history(alpha, review, "succeeded", 18, hours_ago=14)
    _history(alpha, review, "failed", 1, hours_ago=14, error_type="agent_error", message="KeyError: 'diff'")
    _history(alpha, review, "succeeded", 20, hours_ago=6)
    _history(alpha, review, "succeeded", 19, hours_ago=2)
    _history(alpha, review, "failed", 1, hours_ago=2, error_type="timeout", message="deadline of 300 s exceeded")
    _history(alpha, review, "cancelled", 4, hours_ago=3, error_type="cancelled")  # counted, not rated
    _history(bravo, scrape, "succeeded", 27, hours_ago=18)
    _history(bravo, scrape, "failed", 3, hours_ago=18, error_type="connection", message="connection reset by peer")
    _history(bravo, scrape, "succeeded", 6, hours_ago=6)
    rate_limited = _history(bravo, scrape, "failed", 10, hours_ago=6, error_type="rate_limit",
                            message="429 Too Many Requests")
    _history(bravo, scrape, "succeeded", 6, hours_ago=2)
    _history(bravo, scrape, "lease_lost", 5, hours_ago=2, error_type="lease_lost", message="lease expired without renewal")
    _history(bravo, scrape, "timed_out", 3, hours_ago=2, error_type="timeout", message="overall timeout reached")
    _history(charlie, scrape, "succeeded", 2, hours_ago=2)
    _history(charlie, scrape, "failed", 1, hours_ago=2, message="it broke")  # no error type: unknown
    _history(bravo, scrape, "failed", 10, hours_ago=25, error_type="rate_limit")  # before the window
    running = Task.objects.create(kind=review, runner="agent", resource_class="cpu", state="running", agent=alpha,
                                  lease_expires_at=NOW + timedelta(minutes=5))
    TaskAttempt.objects.create(task=running, number=1, agent=alpha, started_at=NOW - timedelta(minutes=1))
    return {"alpha": alpha, "bravo": bravo, "charlie": charlie, "rate_limited": rate_limited}


# --- trend rule --------------------------------------------------------------------------------

@pytest.mark.parametrize("earlier, recent, direction", [
    ((100, 95), (100, 80), "declining"),     # -15 pp, z -3.3
    ((100, 80), (100, 95), "improving"),
    ((100, 90), (100, 88), "stable"),        # -2 pp: under the 5 pp threshold
    ((10, 9), (10, 6), "stable"),            # -30 pp, but z -1.5 on 20 attempts: could be chance
    ((10, 10), (10, 5), "declining"),        # -50 pp, z -2.6
    ((8, 8), (10, 10), "not_enough_data"),   # 18 attempts
    ((30, 30), (3, 0), "not_enough_data"),   # 3 in the recent half
    ((50, 50), (50, 50), "stable"),          # 100 % throughout
])
def test_the_trend_needs_five_points_and_more_than_chance(earlier, recent, direction):
    trend = trend_of(earlier_finished=earlier[0], earlier_succeeded=earlier[1],
                     recent_finished=recent[0], recent_succeeded=recent[1])
    assert trend["direction"] == direction, trend
    assert trend["reason"]


# --- success rate --------------------------------------------------------------------------------

def test_fleet_success_rate_hourly_and_trend(day):
    result = coordination.success_rate(window=window_make())
    assert result["window"]["seconds"] == 86400 and result["groups_total"] == 1
    (fleet,) = result["groups"]
    # Running and cancelled attempts are not rated; the 10 failures of yesterday are outside the window.
    assert (fleet["finished"], fleet["succeeded"], fleet["failed"], fleet["cancelled"]) == (143, 118, 25, 4)
    assert fleet["rate"] == round(118 / 143, 4)
    assert fleet["trend"]["direction"] == "declining"
    assert (fleet["trend"]["earlier_rate"], fleet["trend"]["recent_rate"]) == (round(65 / 70, 4), round(53 / 73, 4))
    assert [(h["hour"].hour, h["finished"], h["succeeded"]) for h in fleet["hourly"]] == [
        (18, 51, 47), (22, 19, 18), (6, 36, 26), (10, 37, 27)]
    assert fleet["hourly"][0]["hour"] == datetime(2026, 3, 9, 18, tzinfo=UTC)


def test_success_rate_per_agent_and_per_kind(day):
    per_agent = coordination.success_rate(window=window_make(), group_by="agent")
    rows = {g["label"]: g for g in per_agent["groups"]}
    assert [g["label"] for g in per_agent["groups"]] == ["bravo", "alpha", "charlie"]  # most failures first
    assert (rows["alpha"]["finished"], rows["alpha"]["succeeded"], rows["alpha"]["trend"]["direction"]) == (80, 77, "stable")
    assert (rows["bravo"]["finished"], rows["bravo"]["succeeded"], rows["bravo"]["trend"]["direction"]) == (60, 39, "declining")
    assert rows["bravo"]["trend"]["change_pp"] == -50.0
    assert (rows["charlie"]["finished"], rows["charlie"]["trend"]["direction"]) == (3, "not_enough_data")
    assert rows["alpha"]["key"] == str(day["alpha"].pk)
    assert sum(h["finished"] for h in rows["bravo"]["hourly"]) == 60

    per_kind = coordination.success_rate(window=window_make(), group_by="kind")
    kinds = {g["key"]: g for g in per_kind["groups"]}
    assert (kinds["web.scrape"]["finished"], kinds["web.scrape"]["succeeded"]) == (63, 41)
    assert (kinds["code.review"]["finished"], kinds["code.review"]["cancelled"]) == (80, 4)

    only_scrape = coordination.success_rate(window=window_make(), kind="web.scrape")["groups"][0]
    assert only_scrape["finished"] == 63
    only_alpha = coordination.success_rate(window=window_make(), agent_id=day["alpha"].pk)["groups"][0]
    assert (only_alpha["finished"], only_alpha["succeeded"]) == (80, 77)
    last_3h = coordination.success_rate(window=window_make(length=timedelta(hours=3)))["groups"][0]
    assert (last_3h["finished"], last_3h["cancelled"]) == (37, 4)


def test_limit_caps_groups_and_a_deleted_agent_still_counts(day):
    result = coordination.success_rate(window=window_make(), group_by="agent", limit=1)
    assert [g["label"] for g in result["groups"]] == ["bravo"] and result["groups_total"] == 3
    Agent.objects.filter(pk=day["charlie"].pk).delete()  # attempts keep agent NULL
    rows = {g["label"]: g for g in coordination.success_rate(window=window_make(), group_by="agent")["groups"]}
    assert rows["(deleted agent)"]["finished"] == 3 and rows["(deleted agent)"]["key"] is None
    assert len(rows["(deleted agent)"]["hourly"]) == 1


def test_success_rate_costs_the_same_few_queries_for_many_agents(at_noon, enrollment_key, django_assert_max_num_queries):
    for i in range(30):
        agent = register(enrollment_key, f"w-{i}")[0]
        _history(agent, f"kind.{i % 4}", "succeeded", 3, hours_ago=i % 20 + 1)
        _history(agent, f"kind.{i % 4}", "failed", 1, hours_ago=1, error_type="connection")
    with django_assert_max_num_queries(3):
        result = coordination.success_rate(window=window_make(), group_by="agent", limit=100)
    assert len(result["groups"]) == result["groups_total"] == 30
    with django_assert_max_num_queries(3):
        assert coordination.success_rate(window=window_make(), group_by="kind", limit=2)["groups_total"] == 4
    with django_assert_max_num_queries(1):
        assert coordination.success_rate(window=window_make())["groups"][0]["finished"] == 120
    with django_assert_max_num_queries(5):
        patterns = coordination.failure_patterns(window=window_make())
    assert patterns["patterns"][0]["agents_affected"] == 30
    with django_assert_max_num_queries(10):
        coordination.diagnostics(window=window_make())


# --- failure patterns ------------------------------------------------------------------------------

def test_failure_patterns_with_shares_culprits_examples_and_advice(day):
    result = coordination.failure_patterns(window=window_make())
    assert (result["finished"], result["failures"], result["failure_rate"]) == (143, 25, round(25 / 143, 4))
    by_type = {p["error_type"]: p for p in result["patterns"]}
    assert [(p["error_type"], p["count"]) for p in result["patterns"]] == [
        ("rate_limit", 10), ("lease_lost", 5), ("timeout", 5), ("connection", 3), ("agent_error", 1), ("unknown", 1)]
    assert sum(p["share"] for p in result["patterns"]) == pytest.approx(1.0, abs=1e-3)

    rate_limit = by_type["rate_limit"]
    assert rate_limit["share"] == 0.4 and rate_limit["agents_affected"] == 1
    assert rate_limit["top_agents"] == [{"agent": str(day["bravo"].pk), "name": "bravo", "count": 10}]
    assert rate_limit["top_kinds"] == [{"kind": "web.scrape", "count": 10}]
    newest = sorted(day["rate_limited"], key=lambda a: a.ended_at, reverse=True)[:3]
    assert [e["task_id"] for e in rate_limit["examples"]] == [a.task_id for a in newest]
    assert rate_limit["examples"][0]["message"] == "429 Too Many Requests #9"
    assert "concurrency" in rate_limit["recommendation"] and "provider key" in rate_limit["recommendation"]
    assert "1 agent hit it, bravo most" in rate_limit["recommendation"]

    timeout = by_type["timeout"]  # timed-out attempts and attempts that reported a timeout
    assert [(a["name"], a["count"]) for a in timeout["top_agents"]] == [("bravo", 3), ("alpha", 2)]
    assert [(k["kind"], k["count"]) for k in timeout["top_kinds"]] == [("web.scrape", 3), ("code.review", 2)]
    assert "attempt_timeout_s" in timeout["recommendation"]
    assert "attempt_timeout_s" in by_type["lease_lost"]["recommendation"]
    assert by_type["unknown"]["examples"][0]["message"] == "it broke #0"
    assert by_type["connection"]["first_seen"] == by_type["connection"]["last_seen"] - timedelta(seconds=2)

    scoped = coordination.failure_patterns(window=window_make(), agent_id=day["alpha"].pk)
    assert [(p["error_type"], p["count"]) for p in scoped["patterns"]] == [("timeout", 2), ("agent_error", 1)]
    by_kind = coordination.failure_patterns(window=window_make(), kind="code.review")
    assert by_kind["failures"] == 3 and all(e["kind"] == "code.review" for p in by_kind["patterns"] for e in p["examples"])


# --- diagnostics -----------------------------------------------------------------------------------

def test_diagnostics_queues_oldest_stuck_and_failing_agents(day, enrollment_key):
    alpha = day["alpha"]
    cobol = services.task_create(kind="legacy.batch", resources={"class": "cpu"}, required_capabilities=["cobol"])[0]
    Task.objects.filter(pk=cobol.pk).update(created_at=NOW - timedelta(minutes=30))
    backing_off = services.task_create(kind="code.review", resources={"class": "cpu"})[0]
    Task.objects.filter(pk=backing_off.pk).update(not_before=NOW + timedelta(seconds=40), wait_reason="retry 2/3 after timeout")
    echo = services.task_create(kind="demo.echo", payload={"message": "hi"})[0]
    Task.objects.filter(pk=echo.pk).update(queue="cpu", dispatched_at=NOW - timedelta(seconds=5))  # sent to Celery
    gone = register(enrollment_key, "gone", capabilities=["code"])[0]
    held = services.task_create(kind="code.fix", resources={"class": "cpu"}, required_capabilities=["code"])[0]
    assert [c.id for c in services.tasks_claim(agent=gone)] == [held.pk]
    Agent.objects.filter(pk=gone.pk).update(status="stale")
    expired = Task.objects.create(kind="web.scrape", runner="agent", resource_class="cpu", state="leased", agent=alpha,
                                  lease_expires_at=NOW - timedelta(seconds=90))

    result = coordination.diagnostics(window=window_make())
    queues = {q["queue"]: q for q in result["queues"]}
    assert list(queues) == ["agent/cpu", "agent/gpu", "celery/cpu", "celery/gpu"]
    assert (queues["agent/cpu"]["depth"], queues["agent/cpu"]["ready"], queues["agent/cpu"]["backing_off"]) == (2, 1, 1)
    assert queues["agent/cpu"]["active"] == 3  # the running attempt of the day, the held task, the expired lease
    assert queues["agent/cpu"]["oldest_age_s"] == 1800.0
    celery = queues["celery/cpu"]
    assert (celery["depth"], celery["dispatched"], celery["ready"]) == (1, 1, 0)
    assert (queues["agent/gpu"]["depth"], queues["agent/gpu"]["oldest_age_s"]) == (0, None)
    assert result["celery_queues"] == [{"queue": "cpu", "waiting": 1, "running": 0}]

    oldest = result["oldest_queued"]
    assert [o["task_id"] for o in oldest] == [cobol.pk, backing_off.pk, oldest[2]["task_id"]]
    assert oldest[0]["why"] == "no online agent has the capabilities it needs (cobol)" and oldest[0]["age_s"] == 1800.0
    assert oldest[1]["why"].startswith("backing off until 12:00:40 UTC (retry 2/3 after timeout)")

    stuck = result["stuck"]
    assert stuck["count"] == 2
    reasons = {t["task_id"]: (t["reason"], t["overdue_s"]) for t in stuck["tasks"]}
    assert reasons[expired.pk] == ("lease expired without renewal", 90.0)
    assert reasons[held.pk][0] == "holder is stale"

    failing = result["failing_agents"]
    assert [(a["name"], a["failed"], a["top_error_type"]) for a in failing] == [
        ("bravo", 21, "rate_limit"), ("alpha", 3, "timeout"), ("charlie", 1, "unknown")]
    assert result["agents"]["online"] == 3 and result["agents"]["stale"] == 1
    assert result["dispatch"]["paused"] is False


# --- API -------------------------------------------------------------------------------------------

def test_the_coordination_api_answers_viewers(day, viewer_api):
    r = viewer_api.get("/api/v1/coordination/success-rate", {"group_by": "agent", "window": "24h"})
    assert r.status_code == 200, r.content
    body = r.json()
    assert body["window"]["seconds"] == 86400 and body["groups_total"] == 3
    assert [(g["label"], g["finished"], g["trend"]["direction"]) for g in body["groups"]] == [
        ("bravo", 60, "declining"), ("alpha", 80, "stable"), ("charlie", 3, "not_enough_data")]
    assert body["groups"][0]["hourly"][0] == {"hour": "2026-03-09T18:00:00Z", "finished": 30, "succeeded": 27, "rate": 0.9}

    r = viewer_api.get("/api/v1/coordination/success-rate", {"kind": "web.scrape", "window": "3h"})
    assert r.json()["groups"][0]["finished"] == 17

    r = viewer_api.get("/api/v1/coordination/failures", {"agent": str(day["bravo"].pk)})
    assert r.status_code == 200
    patterns = r.json()["patterns"]
    assert patterns[0]["error_type"] == "rate_limit" and len(patterns[0]["examples"]) == 3
    assert patterns[0]["recommendation"]

    r = viewer_api.get("/api/v1/coordination/diagnostics")
    assert r.status_code == 200
    assert [q["queue"] for q in r.json()["queues"]] == ["agent/cpu", "agent/gpu", "celery/cpu", "celery/gpu"]
    assert TaskAttempt.objects.count() == 143 + 4 + 10 + 1  # reads write nothing


@pytest.mark.parametrize("path, params, field", [
    ("success-rate", {"window": "banana"}, "window"),
    ("success-rate", {"window": "5m"}, "window"),
    ("success-rate", {"window": "60d"}, "window"),
    ("success-rate", {"group_by": "team"}, "group_by"),
    ("success-rate", {"limit": "0"}, "limit"),
    ("failures", {"agent": "not-a-uuid"}, "agent"),
    ("failures", {"colour": "red"}, "colour"),
    ("diagnostics", {"agent": "x"}, "agent"),
])
def test_bad_coordination_params_are_a_400_that_names_them(viewer_api, path, params, field):
    r = viewer_api.get(f"/api/v1/coordination/{path}", params)
    assert r.status_code == 400
    error = r.json()["error"]
    assert error["code"] == "invalid" and field in error["fields"]


def test_coordination_needs_a_role(anon_api, nobody):
    assert anon_api.get("/api/v1/coordination/success-rate").status_code == 401
    r = token_client(nobody).get("/api/v1/coordination/failures")
    assert r.status_code == 403 and r.json()["error"]["code"] == "permission_denied"


def test_windows_are_parsed_in_every_unit(viewer_api):
    for raw, seconds in (("90m", 5400), ("7d", 604800), ("3600", 3600), ("3600s", 3600)):
        r = viewer_api.get("/api/v1/coordination/success-rate", {"window": raw})
        assert r.json()["window"]["seconds"] == seconds


@pytest.mark.parametrize("error_type", [t for t in ErrorType.values])
def test_every_error_type_has_advice_that_names_where_to_look(error_type):
    one = recommendation_for(error_type, agents=[{"name": "gpu-7", "agent": "x", "count": 4}],
                             kinds=[{"kind": "llm.complete", "count": 4}], agents_affected=1)
    assert "{" not in one and "  " not in one
    assert "gpu-7" in one or "llm.complete" in one
    many = recommendation_for(error_type, agents=[{"name": "a"}, {"name": "b"}], kinds=[], agents_affected=5)
    assert "{" not in many
