import json
import uuid
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone

from apps.agents import services
from apps.agents.choices import CommandType
from apps.agents.models import Agent, AgentCommand, AgentEvent, EnrollmentKey
from apps.core.tokens import token_hash
from apps.security.models import ApiToken
from tests.conftest import agent_client, register

pytestmark = pytest.mark.django_db

REGISTER = "/api/v1/agents/register"


def heartbeat_url(agent_id) -> str:
    return f"/api/v1/agents/{agent_id}/heartbeat"


def body(**overrides) -> dict:
    data = {
        "name": "coder-07",
        "capabilities": ["code", "python"],
        "labels": {"team": "platform"},
        "version": "0.3.1",
        "host": {
            "hostname": "gpu-box-3", "os": "Linux 6.8", "cpu_count": 32, "memory_total_bytes": 256 * 2**30,
            "gpus": [{"index": 0, "uuid": "GPU-1234", "name": "NVIDIA H100 80GB HBM3", "memory_total_bytes": 80 * 2**30}],
        },
        "model": "claude-sonnet-4",
        "provider": "anthropic",
    }
    data.update(overrides)
    return data


def post_register(client, key, data):
    return client.post(REGISTER, data=json.dumps(data), content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {key}")


# --- register ---------------------------------------------------------------------------

def test_register_returns_id_token_and_interval(anon_api, enrollment_key, settings):
    response = post_register(anon_api, enrollment_key, body())

    assert response.status_code == 201, response.content
    data = response.json()
    assert set(data) == {"id", "token", "heartbeat_interval_s"}
    assert data["heartbeat_interval_s"] == settings.PULSEGUARD_HEARTBEAT_INTERVAL
    agent = Agent.objects.get(pk=data["id"])
    assert agent.token_hash == token_hash(data["token"])
    assert agent.host["gpus"][0]["name"] == "NVIDIA H100 80GB HBM3"
    assert agent.capabilities == ["code", "python"]


def test_register_twice_is_409_and_replace_takes_over(anon_api, enrollment_key):
    first = post_register(anon_api, enrollment_key, body()).json()
    conflict = post_register(anon_api, enrollment_key, body())
    assert conflict.status_code == 409
    assert conflict.json()["error"]["code"] == "name_taken"

    replaced = post_register(anon_api, enrollment_key, body(replace=True))
    assert replaced.status_code == 201
    assert replaced.json()["id"] == first["id"]
    assert Agent.objects.count() == 1


@pytest.mark.parametrize(
    "data, field",
    [
        (body(name=""), "name"),
        (body(name="has spaces"), "name"),
        (body(capabilities="code"), "capabilities"),
        (body(labels=["a"]), "labels"),
        (body(host={"cpu_count": "many"}), "host"),
        (body(host={"gpus": [{"index": -1}]}), "host"),
        (body(surprise=True), "surprise"),
        (body(kind="robot"), "kind"),
    ],
)
def test_register_rejects_bad_input_and_writes_nothing(anon_api, enrollment_key, data, field):
    response = post_register(anon_api, enrollment_key, data)

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid" and field in error["fields"]
    assert Agent.objects.count() == 0
    assert EnrollmentKey.objects.get().uses == 0


def test_register_without_a_key_is_401(anon_api):
    response = anon_api.post(REGISTER, data=body(), format="json")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "authentication_required"


def test_register_with_a_revoked_key_is_401_with_the_reason(anon_api, enrollment_key):
    EnrollmentKey.objects.update(revoked_at=timezone.now())
    response = post_register(anon_api, enrollment_key, body())
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "enrollment_key_revoked"
    assert Agent.objects.count() == 0


def test_malformed_json_is_400(anon_api, enrollment_key):
    response = anon_api.post(REGISTER, data="{not json", content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {enrollment_key}")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "malformed_json"


def test_an_oversized_body_is_413_and_writes_nothing(anon_api, enrollment_key, settings):
    huge = body(labels={f"k{i}": "x" * 190 for i in range(50)}, version="v" * 50)
    huge["host"]["os"] = "x" * (settings.PULSEGUARD_MAX_BODY_BYTES + 10)
    response = post_register(anon_api, enrollment_key, huge)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "body_too_large"
    assert Agent.objects.count() == 0


def test_form_encoded_bodies_are_refused(anon_api, enrollment_key):
    response = anon_api.post(REGISTER, data="name=x", content_type="application/x-www-form-urlencoded", HTTP_AUTHORIZATION=f"Bearer {enrollment_key}")
    assert response.status_code == 415
    assert response.json()["error"]["code"] == "unsupported_media_type"


# --- heartbeat --------------------------------------------------------------------------

def test_heartbeat_returns_pending_commands_once(agent_and_token, operator):
    agent, token = agent_and_token
    command = services.agent_command_issue(agent=agent, type=CommandType.DRAIN, actor=operator)
    client = agent_client(token)

    first = client.post(heartbeat_url(agent.pk), {"state": "busy", "readings": {"cpu_percent": 50.0}}, format="json")
    second = client.post(heartbeat_url(agent.pk), {"state": "busy"}, format="json")

    assert first.status_code == 200
    assert first.json()["commands"][0]["id"] == str(command.pk)
    assert first.json()["commands"][0]["type"] == "drain"
    assert second.json() == {"commands": [], "heartbeat_interval_s": 15, "status": "online"}
    agent.refresh_from_db()
    assert agent.state == "busy" and agent.readings == {"cpu_percent": 50.0}


@pytest.mark.parametrize(
    "payload, field",
    [
        ({"state": "sleeping"}, "state"),
        ({"readings": {"cpu_percent": 140}}, "readings"),
        ({"readings": {"gpus": [{"index": 0, "temperature_c": "hot"}]}}, "readings"),
        ({"readings": {"disk": 1}}, "readings"),
        ({"latency_ms": -1}, "latency_ms"),
        ({"status": "online"}, "status"),
    ],
)
def test_heartbeat_rejects_bad_input_and_writes_nothing(agent_and_token, payload, field):
    agent, token = agent_and_token
    before = Agent.objects.values_list("last_heartbeat_at", flat=True).get(pk=agent.pk)

    response = agent_client(token).post(heartbeat_url(agent.pk), payload, format="json")

    assert response.status_code == 400
    assert field in response.json()["error"]["fields"]
    assert Agent.objects.values_list("last_heartbeat_at", flat=True).get(pk=agent.pk) == before


def test_a_token_for_another_agent_is_403(enrollment_key):
    a, _ = register(enrollment_key, name="a")
    _, token_b = register(enrollment_key, name="b")
    response = agent_client(token_b).post(heartbeat_url(a.pk), {"state": "idle"}, format="json")
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "token_agent_mismatch"


def test_heartbeat_for_an_unknown_agent_is_404(agent_and_token):
    _, token = agent_and_token
    response = agent_client(token).post(heartbeat_url(uuid.uuid4()), {"state": "idle"}, format="json")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "unknown_agent"


def test_a_malformed_agent_id_is_a_json_404(agent_and_token):
    _, token = agent_and_token
    response = agent_client(token).post("/api/v1/agents/not-a-uuid/heartbeat", {}, format="json")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_a_replaced_token_is_401(anon_api, enrollment_key):
    first = post_register(anon_api, enrollment_key, body()).json()
    post_register(anon_api, enrollment_key, body(replace=True))
    response = agent_client(first["token"]).post(heartbeat_url(first["id"]), {"state": "idle"}, format="json")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_token"


def test_an_agent_token_cannot_read_the_fleet(agent_and_token):
    _, token = agent_and_token
    assert agent_client(token).get("/api/v1/agents").status_code in (401, 403)


def test_agent_acks_a_command_and_says_goodbye(agent_and_token, operator):
    agent, token = agent_and_token
    command = services.agent_command_issue(agent=agent, type=CommandType.RESTART, actor=operator)
    client = agent_client(token)
    client.post(heartbeat_url(agent.pk), {}, format="json")

    ack = client.post(f"/api/v1/agents/{agent.pk}/commands/{command.pk}/ack", {"ok": True, "message": "restarted"}, format="json")
    again = client.post(f"/api/v1/agents/{agent.pk}/commands/{command.pk}/ack", {"ok": True}, format="json")
    bye = client.post(f"/api/v1/agents/{agent.pk}/goodbye")

    assert ack.status_code == 200 and ack.json()["status"] == "done"
    assert again.status_code == 409 and again.json()["error"]["code"] == "already_acknowledged"
    assert bye.status_code == 204
    assert Agent.objects.get(pk=agent.pk).status == "offline"


def test_an_agent_cannot_say_goodbye_for_another(enrollment_key):
    a, _ = register(enrollment_key, name="a")
    _, token_b = register(enrollment_key, name="b")
    assert agent_client(token_b).post(f"/api/v1/agents/{a.pk}/goodbye").status_code == 403
    assert Agent.objects.get(pk=a.pk).status == "online"


# --- operator endpoints -----------------------------------------------------------------

def test_operators_list_and_filter_agents(viewer_api, enrollment_key):
    register(enrollment_key, name="gpu-1", labels={"pool": "gpu"}, capabilities=["infer"])
    register(enrollment_key, name="cpu-1", labels={"pool": "cpu"}, capabilities=["code"])
    Agent.objects.filter(name="cpu-1").update(status="stale")

    everything = viewer_api.get("/api/v1/agents").json()
    stale = viewer_api.get("/api/v1/agents?status=stale").json()
    by_label = viewer_api.get("/api/v1/agents?label=pool=gpu").json()
    by_capability = viewer_api.get("/api/v1/agents?capability=code").json()

    assert everything["count"] == 2
    row = everything["results"][0]
    assert {"id", "name", "status", "health_score", "last_heartbeat_at", "host", "model", "labels", "capabilities"} <= set(row)
    assert "token_hash" not in row
    assert [a["name"] for a in stale["results"]] == ["cpu-1"]
    assert [a["name"] for a in by_label["results"]] == ["gpu-1"]
    assert [a["name"] for a in by_capability["results"]] == ["cpu-1"]


def test_a_bad_filter_is_400_not_an_empty_list(viewer_api):
    response = viewer_api.get("/api/v1/agents?status=asleep")
    assert response.status_code == 400
    assert "status" in response.json()["error"]["fields"]


def test_agent_detail_and_history(viewer_api, agent_and_token):
    agent, _ = agent_and_token
    detail = viewer_api.get(f"/api/v1/agents/{agent.pk}")
    events = viewer_api.get(f"/api/v1/agents/{agent.pk}/events")
    assert detail.status_code == 200 and detail.json()["health_score"] == 100
    assert [e["kind"] for e in events.json()] == ["registered"]
    assert viewer_api.get(f"/api/v1/agents/{uuid.uuid4()}").status_code == 404


@pytest.mark.parametrize("command", ["restart", "drain", "isolate", "release"])
def test_only_operators_send_commands(viewer_api, operator_api, anon_api, agent_and_token, command):
    agent, _ = agent_and_token
    url = f"/api/v1/agents/{agent.pk}/{command}"

    assert anon_api.post(url).status_code == 401
    assert viewer_api.post(url).status_code == 403
    assert AgentCommand.objects.count() == 0

    response = operator_api.post(url, {"reason": "maintenance"}, format="json")
    assert response.status_code == 202
    assert response.json()["type"] == command
    stored = AgentCommand.objects.get()
    assert stored.issued_by.username == "oscar-operator" and stored.args == {"reason": "maintenance"}
    assert AgentEvent.objects.filter(kind="command_issued", actor__username="oscar-operator").exists()


def test_isolate_through_the_api_changes_status_at_once(operator_api, agent_and_token):
    agent, _ = agent_and_token
    operator_api.post(f"/api/v1/agents/{agent.pk}/isolate")
    assert Agent.objects.get(pk=agent.pk).status == "isolated"


def test_a_user_without_a_role_gets_403(nobody, agent_and_token):
    from tests.conftest import token_client

    assert token_client(nobody).get("/api/v1/agents").status_code == 403


@pytest.mark.parametrize("state", ["revoked", "expired"])
def test_dead_api_tokens_are_401(viewer, state):
    from tests.conftest import token_client

    client = token_client(viewer)
    field = {"revoked": {"revoked_at": timezone.now()}, "expired": {"expires_at": timezone.now() - timedelta(seconds=1)}}[state]
    ApiToken.objects.update(**field)
    response = client.get("/api/v1/agents")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "authentication_failed"
    assert state in response.json()["error"]["message"]


def test_session_users_can_use_the_api(client, viewer):
    client.force_login(viewer)
    assert client.get("/api/v1/agents").status_code == 200


# --- management commands ----------------------------------------------------------------

def test_create_enrollment_key_prints_the_key_last(capsys, db):
    call_command("create_enrollment_key", "edge-hosts", "--uses", "3", "--expires-in", "3600")
    key = capsys.readouterr().out.strip().splitlines()[-1]
    stored = EnrollmentKey.objects.get(name="edge-hosts")
    assert stored.key_hash == token_hash(key) and stored.max_uses == 3 and stored.expires_at is not None


def test_create_api_token_prints_the_token_last(capsys, operator):
    call_command("create_api_token", operator.username)
    raw = capsys.readouterr().out.strip().splitlines()[-1]
    assert ApiToken.objects.get().key_hash == token_hash(raw)


def test_openapi_schema_and_docs_are_served(viewer_api):
    schema = viewer_api.get("/api/schema/?format=json")
    assert schema.status_code == 200
    paths = schema.json()["paths"]
    assert "/api/v1/agents/register" in paths and "/api/v1/agents/{agent_id}/heartbeat" in paths


@pytest.mark.parametrize("label", ["a__regex=(", "a__isnull=zz", "pool__contains=gpu"])
def test_label_filters_are_plain_labels_never_orm_lookups(viewer_api, enrollment_key, label):
    register(enrollment_key, name="gpu-1", labels={"pool": "gpu"})
    response = viewer_api.get("/api/v1/agents", {"label": label})
    assert response.status_code == 200
    assert response.json()["count"] == 0
