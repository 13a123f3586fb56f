"""The read API: roles, parameters, error shapes."""

from datetime import timedelta

import pytest
from django.utils import timezone

from apps.metrics import services

pytestmark = pytest.mark.django_db


@pytest.fixture
def telemetry(two_agents):
    (a, _), (b, _) = two_agents
    now = timezone.now().replace(second=0, microsecond=0)
    for agent, cpu in ((a, 20.0), (b, 60.0)):
        services.metrics_ingest(agent_id=agent.pk, samples=[
            {"kind": "host", "ts": (now - timedelta(minutes=m)).isoformat(), "cpu_percent": cpu} for m in range(1, 11)
        ] + [{"kind": "llm", "ts": (now - timedelta(minutes=2)).isoformat(), "provider": "anthropic",
              "model": "claude-sonnet-4-5", "tokens_in": 2000, "tokens_out": 500, "latency_ms": 1200.0}])
    services.metrics_rollup()
    return a, b, now


def test_viewers_query_series_with_repeated_agents_and_labels(viewer_api, telemetry):
    a, b, now = telemetry
    frm = (now - timedelta(minutes=10)).isoformat()
    r = viewer_api.get("/api/v1/metrics/query", {"metric": "host.cpu_percent", "from": frm, "to": now.isoformat(),
                                                  "step": 300, "agent": [str(a.pk), str(b.pk)]})
    assert r.status_code == 200, r.content
    body = r.json()
    assert (body["metric"], body["unit"], body["resolution"], body["step"]) == ("host.cpu_percent", "percent", "1m", 300)
    assert {s["agent_name"]: {p[1] for p in s["points"]} for s in body["series"]} == {
        "trainer-1": {20.0}, "chatbot-1": {60.0}}
    r = viewer_api.get("/api/v1/metrics/query", {"metric": "host.cpu_percent", "from": frm, "step": 600,
                                                  "label": "team=support", "group_by": "fleet"})
    assert [p[1] for p in r.json()["series"][0]["points"]][0] == 60.0


def test_llm_usage_by_provider(viewer_api, telemetry):
    r = viewer_api.get("/api/v1/metrics/llm/usage", {"group_by": "provider"})
    assert r.status_code == 200, r.content
    (group,) = r.json()["groups"]
    assert (group["key"], group["calls"], group["tokens_in"]) == ("anthropic", 2, 4000)
    assert group["cost_usd"] == pytest.approx(2 * (2000 * 3 + 500 * 15) / 1e6)


def test_the_catalog_names_dcgm_fields(viewer_api):
    r = viewer_api.get("/api/v1/metrics/catalog")
    names = {m["name"]: m for m in r.json()}
    assert names["DCGM_FI_DEV_GPU_UTIL"]["unit"] == "percent"
    assert "host.cpu_percent" in names and "llm.cost_usd" in names


@pytest.mark.parametrize("params, code", [
    ({"metric": "nope"}, "unknown_metric"),
    ({"metric": "host.cpu_percent", "agent": "not-a-uuid"}, "invalid"),
    ({"metric": "host.cpu_percent", "colour": "red"}, "invalid"),
    ({"metric": "host.cpu_percent", "step": "0"}, "invalid"),
    ({"metric": "host.cpu_percent", "from": "yesterday"}, "invalid"),
    ({"metric": "host.cpu_percent", "label": "=x"}, "invalid_filter"),
    ({}, "invalid"),
])
def test_bad_query_parameters_get_a_4xx_with_a_code(viewer_api, params, code):
    r = viewer_api.get("/api/v1/metrics/query", params)
    assert r.status_code == 400, r.content
    assert r.json()["error"]["code"] == code


def test_reading_needs_the_viewer_role(anon_api, nobody, agent_and_token):
    from tests.conftest import agent_client, token_client

    assert anon_api.get("/api/v1/metrics/query", {"metric": "host.cpu_percent"}).status_code == 401
    assert token_client(nobody).get("/api/v1/metrics/llm/usage").status_code == 403
    _, agent_token = agent_and_token
    assert agent_client(agent_token).get("/api/v1/metrics/catalog").status_code in (401, 403)


def test_the_openapi_schema_documents_the_endpoints(viewer_api):
    r = viewer_api.get("/api/schema/", HTTP_ACCEPT="application/json")
    paths = r.json()["paths"]
    assert "/api/v1/agents/{agent_id}/metrics" in paths
    assert "/api/v1/metrics/query" in paths and "/api/v1/metrics/llm/usage" in paths
