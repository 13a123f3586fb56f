"""The claim long poll against a real uvicorn server: a waiting agent is woken by NOTIFY."""

import threading
import time

import httpx
import pytest

from apps.workflows import services
from tests.conftest import register
from tests.live import uvicorn_server

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(scope="module")
def server_url(django_db_setup, django_db_blocker, tmp_path_factory):
    with uvicorn_server(tmp_path_factory.mktemp("claims") / "server.log") as url:
        yield url


def test_a_waiting_claim_is_woken_when_work_arrives(server_url, enrollment_key):
    _, token = register(enrollment_key, "waiter")
    created = {}

    def queue_later():
        time.sleep(0.7)
        created["task"] = services.task_create(kind="code.review", resources={"class": "cpu"})[0]

    creator = threading.Thread(target=queue_later)
    with httpx.Client(base_url=server_url, headers={"Authorization": f"Bearer {token}"}, timeout=30) as http:
        # Meanwhile the server stays responsive: the waiter holds no thread.
        started = time.monotonic()
        creator.start()
        waiting = threading.Thread(target=lambda: created.setdefault(
            "response", http.post("/api/v1/tasks/claim", json={"limit": 1, "wait": 20})))
        waiting.start()
        time.sleep(0.2)
        assert http.get("/healthz").status_code == 200
        assert http.post("/api/v1/tasks/renew", json={"task_ids": [1]}).status_code == 200
        waiting.join(25)
        creator.join()
    waited = time.monotonic() - started
    r = created["response"]
    assert r.status_code == 200, r.text
    assert [t["id"] for t in r.json()["tasks"]] == [created["task"].pk]
    # Woken by the notification: well before the 5 s fallback re-check or the 20 s limit.
    assert waited < 4


def test_a_wait_with_no_work_answers_empty_and_bad_input_is_refused(server_url, enrollment_key):
    _, token = register(enrollment_key, "patient")
    with httpx.Client(base_url=server_url, headers={"Authorization": f"Bearer {token}"}, timeout=30) as http:
        r = http.post("/api/v1/tasks/claim", json={"wait": 0.3})
        assert r.status_code == 200 and r.json() == {"tasks": []}
        r = http.post("/api/v1/tasks/claim", json={"wait": 999})
        assert r.status_code == 400 and "wait" in r.json()["error"]["fields"]
        r = http.post("/api/v1/tasks/claim", content=b"{nope", headers={"Content-Type": "application/json"})
        assert r.status_code == 400 and r.json()["error"]["code"] == "malformed_json"
    r = httpx.post(f"{server_url}/api/v1/tasks/claim", json={})
    assert r.status_code == 401
