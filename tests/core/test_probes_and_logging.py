import json
import logging

import pytest
import structlog
from celery import signals

from apps.agents.tasks import agents_check_heartbeats
from pulseguard.logging import REQUEST_ID_HEADER


def test_healthz_answers_without_touching_backends(client):
    response = client.get("/healthz")
    assert response.status_code == 200 and response.json() == {"status": "ok"}


@pytest.mark.django_db
def test_readyz_checks_postgresql_and_redis(client):
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json()["checks"] == {"postgresql": "ok", "redis": "ok"}


@pytest.mark.django_db
def test_readyz_is_503_when_redis_is_unreachable(client, settings):
    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["checks"]["redis"].startswith("error")


def test_every_response_carries_a_request_id(client):
    mine = client.get("/healthz", HTTP_X_REQUEST_ID="abc-123")
    made_up = client.get("/healthz")
    hostile = client.get("/healthz", HTTP_X_REQUEST_ID="x" * 500)
    assert mine["X-Request-ID"] == "abc-123"
    assert len(made_up["X-Request-ID"]) == 32
    assert hostile["X-Request-ID"] != "x" * 500


def test_the_request_id_follows_work_into_celery_tasks():
    """Publishing copies the bound id into the message; the worker binds it before the task."""
    structlog.contextvars.bind_contextvars(request_id="req-42")
    headers: dict = {}
    signals.before_task_publish.send(sender="apps.agents.tasks.agents_check_heartbeats", headers=headers, body=None)
    assert headers[REQUEST_ID_HEADER] == "req-42"

    structlog.contextvars.clear_contextvars()
    task = agents_check_heartbeats
    task.push_request(**{REQUEST_ID_HEADER: "req-42", "id": "task-1"})
    try:
        signals.task_prerun.send(sender=task, task=task, task_id="task-1")
        assert structlog.contextvars.get_contextvars()["request_id"] == "req-42"
    finally:
        task.pop_request()
        signals.task_postrun.send(sender=task, task=task, task_id="task-1")
    assert "request_id" not in structlog.contextvars.get_contextvars()


def test_json_log_lines_carry_the_request_id(capsys):
    from django.conf import settings
    import logging.config

    from pulseguard.logging import build_logging_config

    logging.config.dictConfig(build_logging_config(fmt="json", level="INFO"))
    try:
        structlog.contextvars.bind_contextvars(request_id="req-7")
        structlog.get_logger("tests").info("something_happened", agent="a1")
        logging.getLogger("django.request").warning("plain stdlib line")
        lines = [json.loads(line) for line in capsys.readouterr().err.strip().splitlines()]
    finally:
        structlog.contextvars.clear_contextvars()
        logging.config.dictConfig(settings.LOGGING)
    assert lines[0]["event"] == "something_happened" and lines[0]["request_id"] == "req-7" and lines[0]["agent"] == "a1"
    assert lines[1]["event"] == "plain stdlib line" and lines[1]["request_id"] == "req-7"


def test_metrics_are_exported_for_prometheus(client):
    response = client.get("/metrics")
    assert response.status_code == 200
    assert b"django_http_requests_total_by_method_total" in response.content


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics"])
def test_probes_answer_any_host_header(client, path):
    """Orchestrators and Prometheus reach pods by IP, which is not in ALLOWED_HOSTS."""
    assert client.get(path, HTTP_HOST="10.1.2.3:8000").status_code == 200
    assert client.get("/accounts/login/", HTTP_HOST="10.1.2.3:8000").status_code == 400


def test_metrics_can_require_a_bearer_token(client, settings):
    from django.test import override_settings

    with override_settings(PULSEGUARD_METRICS_TOKEN="s3cret"):
        assert client.get("/metrics").status_code == 401
        assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 401
        assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer s3cret").status_code == 200
