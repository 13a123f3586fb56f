"""The task, coordination and controls pages: who may see and do what, and that every
action changes the database (or, on bad input, changes nothing)."""

import pytest
from django.utils.html import escape

from apps.security.models import AuditRecord, FleetControl
from apps.workflows import controls, services
from apps.workflows.models import Task
from tests.conftest import register

pytestmark = pytest.mark.django_db

GiB = 2**30


@pytest.fixture(autouse=True)
def _fresh_pause_cache():
    controls.dispatch_paused_forget()
    yield
    controls.dispatch_paused_forget()


def _agent(key, name="alpha", **kw):
    agent, _ = register(key, name=name, **kw)
    return agent


def _failed_once(agent, *, kind="report.build", error_type="timeout", message="took too long"):
    """A task whose first attempt failed (it is queued again for its retry)."""
    task, _ = services.task_create(kind=kind, required_capabilities=["python"], max_attempts=1)
    services.tasks_claim(agent=agent, limit=1)
    services.task_fail(agent=agent, task_id=task.pk, error_type=error_type, message=message)
    return Task.objects.get(pk=task.pk)


def _succeeded(agent, *, kind="report.build"):
    task, _ = services.task_create(kind=kind, required_capabilities=["python"])
    services.tasks_claim(agent=agent, limit=1)
    return services.task_complete(agent=agent, task_id=task.pk, result={"ok": True})


def _form(**overrides):
    data = {"kind": "report.build", "payload": '{"rows": 10}', "capabilities": "python, llm", "priority": "5",
            "resource_class": "", "vram_mb": "", "model": "", "max_attempts": "2", "attempt_timeout_s": "120",
            "queued_timeout_s": "", "overall_timeout_s": ""}
    data.update(overrides)
    return data


# --- roles ------------------------------------------------------------------------------------

def test_the_pages_need_a_login_and_a_role(client, nobody):
    task, _ = services.task_create(kind="report.build")
    urls = ["/tasks/", f"/tasks/{task.pk}/", "/coordination/", "/controls/"]
    for url in urls:
        response = client.get(url)
        assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")
    client.force_login(nobody)
    for url in urls:
        assert client.get(url).status_code == 403


def test_a_viewer_reads_tasks_but_gets_no_form_and_no_buttons(client, viewer):
    task, _ = services.task_create(kind="report.build", payload={"rows": 3})
    client.force_login(viewer)

    html = client.get("/tasks/").content.decode()
    assert "report.build" in html and 'data-testid="count-queued">1<' in html
    assert 'ws-connect="/ws/live/?page=tasks"' in html
    assert "Queue task" not in html

    html = client.get(f"/tasks/{task.pk}/").content.decode()
    assert "&quot;rows&quot;: 3" in html and "Routing" in html
    assert "Cancel task" not in html and "Reassign" not in html


def test_nav_links_to_tasks_coordination_and_controls(client, viewer):
    client.force_login(viewer)
    html = client.get("/").content.decode()
    assert 'href="/tasks/"' in html and 'href="/coordination/"' in html and 'href="/controls/"' in html


# --- the list -----------------------------------------------------------------------------------

def test_the_list_filters_by_state_and_kind_newest_first(client, viewer, enrollment_key):
    agent = _agent(enrollment_key)
    _succeeded(agent, kind="report.build")
    services.task_create(kind="email.send")
    services.task_create(kind="report.build")
    client.force_login(viewer)

    html = client.get("/tasks/?state=succeeded").content.decode()
    assert html.count('class="task-row"') == 1 and "Succeeded" in html

    html = client.get("/tasks/?kind=email.send").content.decode()
    assert html.count('class="task-row"') == 1 and "email.send" in html

    ids = [t.pk for t in Task.objects.order_by("-id")]
    html = client.get("/tasks/").content.decode()
    positions = [html.index(f'id="task-row-{i}"') for i in ids]
    assert positions == sorted(positions)  # newest first


def test_the_list_shows_the_wait_reason_of_a_queued_task_and_gpu_placement(client, viewer):
    queued, _ = services.task_create(kind="report.build")
    Task.objects.filter(pk=queued.pk).update(wait_reason="waiting for a GPU with 50000 MiB free")
    placed, _ = services.task_create(kind="lora.train", resources={"class": "gpu", "vram_mb": 1000})
    Task.objects.filter(pk=placed.pk).update(state="succeeded", gpu_node="gpu-a", gpu_index=1)
    client.force_login(viewer)

    html = client.get("/tasks/").content.decode()
    assert "waiting for a GPU with 50000 MiB free" in html
    assert "on gpu-a · GPU 1" in html and "GPU · 1,000 MiB" in html


def test_a_bad_filter_shows_an_error_and_the_whole_list(client, viewer):
    services.task_create(kind="report.build")
    client.force_login(viewer)
    response = client.get("/tasks/?state=bogus&agent=not-a-uuid")
    html = response.content.decode()
    assert response.status_code == 200 and "Invalid filter" in html and "report.build" in html


def test_htmx_gets_only_the_table(client, viewer):
    services.task_create(kind="report.build")
    client.force_login(viewer)
    html = client.get("/tasks/?state=queued", HTTP_HX_REQUEST="true", HTTP_HX_TARGET="task-table").content.decode()
    assert html.lstrip().startswith('<div id="task-table"') and "<html" not in html


# --- create -----------------------------------------------------------------------------------

def test_an_operator_creates_a_task_from_the_form(client, operator):
    client.force_login(operator)
    response = client.post("/tasks/new", _form(resource_class="cpu"))

    task = Task.objects.get()
    assert response.status_code == 302 and response["Location"] == f"/tasks/{task.pk}/"
    assert task.kind == "report.build" and task.payload == {"rows": 10} and task.priority == 5
    assert task.required_capabilities == ["llm", "python"] and task.max_attempts == 2 and task.attempt_timeout_s == 120
    assert task.resource_class == "cpu" and task.created_by == operator


@pytest.mark.parametrize("bad, field, message", [
    ({"payload": "{not json"}, "payload", "Not valid JSON"),
    ({"payload": "[1, 2]"}, "payload", "must be a JSON object"),
    ({"kind": "no spaces allowed"}, "kind", "Letters, digits"),
    ({"priority": "9999"}, "priority", "less than or equal to 1000"),
    ({"kind": "demo.sleep", "payload": "{}"}, "payload", "payload.seconds: is required"),  # the skill's schema
])
def test_bad_input_is_shown_beside_the_field_and_nothing_is_written(client, operator, bad, field, message):
    client.force_login(operator)
    response = client.post("/tasks/new", _form(**bad))
    html = response.content.decode()
    assert response.status_code == 400
    assert f'data-testid="error-{field}"' in html and message in html
    assert "<details class=\"card task-new\" id=\"task-new\" open" in html
    assert not Task.objects.exists()


def test_more_vram_than_any_gpu_has_is_refused(client, operator, enrollment_key):
    _agent(enrollment_key, host={"hostname": "g", "gpus": [{"index": 0, "name": "L4", "memory_total_bytes": 24 * GiB}]})
    client.force_login(operator)
    response = client.post("/tasks/new", _form(resource_class="gpu", vram_mb="100000"))
    assert response.status_code == 400 and "More than any GPU has." in response.content.decode()
    assert not Task.objects.exists()


def test_a_viewer_cannot_create(client, viewer):
    client.force_login(viewer)
    assert client.post("/tasks/new", _form()).status_code == 403
    assert not Task.objects.exists()


# --- detail and actions -------------------------------------------------------------------------

def test_the_detail_shows_attempts_routing_and_errors(client, viewer, enrollment_key):
    agent = _agent(enrollment_key)
    task = _failed_once(agent, message="upstream took 31 s")
    client.force_login(viewer)
    html = client.get(f"/tasks/{task.pk}/").content.decode()
    assert "Failed" in html and "upstream took 31 s" in html and "alpha" in html
    assert 'data-testid="attempt-outcome">Failed<' in html
    assert escape(task.routing_reason) in html
    assert client.get("/tasks/999999/").status_code == 404


def test_an_operator_cancels_and_a_second_cancel_is_a_409(client, operator):
    task, _ = services.task_create(kind="report.build")
    client.force_login(operator)

    response = client.post(f"/tasks/{task.pk}/cancel")
    assert response.status_code == 302
    assert Task.objects.get(pk=task.pk).state == "cancelled"

    response = client.post(f"/tasks/{task.pk}/cancel")
    assert response.status_code == 409 and "already cancelled" in response.content.decode()


def test_retry_with_a_priority_boost(client, operator, enrollment_key):
    task = _failed_once(_agent(enrollment_key))
    assert task.state == "failed"
    client.force_login(operator)

    response = client.post(f"/tasks/{task.pk}/retry", {"priority_boost": "abc"})
    assert response.status_code == 400 and "whole number" in response.content.decode()
    assert Task.objects.get(pk=task.pk).state == "failed"

    response = client.post(f"/tasks/{task.pk}/retry", {"priority_boost": "7"})
    task.refresh_from_db()
    assert response.status_code == 302 and task.state == "queued" and task.priority == 7
    assert client.post(f"/tasks/{task.pk}/retry").status_code == 409  # queued tasks are not retried


def test_reassign_to_an_agent_or_automatically(client, operator, enrollment_key):
    _agent(enrollment_key, name="alpha")
    beta = _agent(enrollment_key, name="beta")
    task, _ = services.task_create(kind="report.build", required_capabilities=["python"])
    client.force_login(operator)

    response = client.post(f"/tasks/{task.pk}/reassign", {"agent": str(beta.pk)})
    task.refresh_from_db()
    assert response.status_code == 302 and task.assigned_agent_id == beta.pk

    response = client.post(f"/tasks/{task.pk}/reassign", {"agent": "auto"})
    assert response.status_code == 302 and Task.objects.get(pk=task.pk).assigned_agent_id is not None

    response = client.post(f"/tasks/{task.pk}/reassign", {"agent": "nope"})
    assert response.status_code == 400


def test_reassign_with_nobody_able_is_a_409(client, operator):
    task, _ = services.task_create(kind="report.build", required_capabilities=["cuda-13"])
    client.force_login(operator)
    response = client.post(f"/tasks/{task.pk}/reassign", {"agent": "auto"})
    assert response.status_code == 409 and "No other healthy agent" in response.content.decode()
    assert Task.objects.get(pk=task.pk).assigned_agent_id is None


def test_a_viewer_cannot_act_on_a_task(client, viewer):
    task, _ = services.task_create(kind="report.build")
    client.force_login(viewer)
    for action in ("cancel", "retry", "reassign"):
        assert client.post(f"/tasks/{task.pk}/{action}").status_code == 403
    assert Task.objects.get(pk=task.pk).state == "queued"


def test_actions_need_post(client, operator):
    task, _ = services.task_create(kind="report.build")
    client.force_login(operator)
    assert client.get(f"/tasks/{task.pk}/cancel").status_code == 405


# --- coordination ---------------------------------------------------------------------------------

def test_coordination_shows_rates_patterns_and_queues_from_attempts(client, viewer, enrollment_key):
    agent = _agent(enrollment_key)
    for _ in range(3):
        _succeeded(agent)
    _failed_once(agent, error_type="rate_limit", message="429 from provider")
    services.task_create(kind="lora.train", resources={"class": "gpu", "vram_mb": 1000})
    client.force_login(viewer)

    html = client.get("/coordination/").content.decode()
    assert 'data-testid="fleet-rate">75%<' in html
    assert 'data-testid="fleet-finished">4<' in html
    assert 'data-pattern="rate_limit"' in html and "429 from provider" in html
    assert "Rate limit" in html and "What to do" in html
    assert 'data-testid="depth-agentgpu">1<' in html
    assert "not enough data" in html  # 4 attempts are too few for a trend

    partial = client.get("/coordination/", HTTP_HX_REQUEST="true", HTTP_HX_TARGET="coord-queues").content.decode()
    assert partial.lstrip().startswith('<div id="coord-queues"') and 'hx-trigger="every 5s"' in partial


# --- controls -----------------------------------------------------------------------------------

def test_a_viewer_sees_the_controls_state_but_no_buttons_and_cannot_act(client, viewer):
    client.force_login(viewer)
    html = client.get("/controls/").content.decode()
    assert "Dispatch:" in html and 'data-testid="control-pause"' not in html
    assert client.get("/controls/pause/").status_code == 403
    assert client.post("/controls/pause/", {"confirm": "pause"}).status_code == 403
    assert not FleetControl.objects.filter(paused=True).exists() and not AuditRecord.objects.exists()


def test_pause_needs_its_name_typed_then_shows_a_banner_everywhere(client, operator):
    client.force_login(operator)
    html = client.get("/controls/pause/").content.decode()
    assert "Confirm: Pause dispatch" in html

    response = client.post("/controls/pause/", {"confirm": "resume", "reason": "db failover"})
    assert response.status_code == 400 and "nothing was done" in response.content.decode()
    assert not controls.dispatch_paused() and not AuditRecord.objects.exists()

    response = client.post("/controls/pause/", {"confirm": "pause", "reason": "db failover"}, follow=True)
    html = response.content.decode()
    assert controls.dispatch_paused()
    assert "Dispatch paused" in html and 'data-testid="paused-banner"' in html and "db failover" in html
    assert AuditRecord.objects.get().action == "controls.pause"
    assert 'data-testid="paused-banner"' in client.get("/tasks/").content.decode()

    client.post("/controls/resume/", {"confirm": "resume"})
    controls.dispatch_paused_forget()
    assert not controls.dispatch_paused()
    assert 'data-testid="paused-banner"' not in client.get("/tasks/").content.decode()


def test_clear_queue_says_how_many_it_cancelled(client, operator):
    for _ in range(3):
        services.task_create(kind="report.build")
    client.force_login(operator)
    html = client.post("/controls/clear-queue/", {"confirm": "clear-queue"}, follow=True).content.decode()
    assert "3 queued tasks cancelled" in html
    assert set(Task.objects.values_list("state", flat=True)) == {"cancelled"}
    assert "clear-queue" in html  # the audit log lists it


def test_controls_need_csrf(operator):
    from django.test import Client

    csrf_client = Client(enforce_csrf_checks=True)
    csrf_client.force_login(operator)
    assert csrf_client.post("/controls/pause/", {"confirm": "pause"}).status_code == 403
    assert not FleetControl.objects.filter(paused=True).exists()


def test_an_unknown_control_is_a_404(client, operator):
    client.force_login(operator)
    assert client.post("/controls/self-destruct/", {"confirm": "self-destruct"}).status_code == 404


# --- agent page ---------------------------------------------------------------------------------

def test_the_agent_page_shows_its_breaker_and_recent_tasks(client, viewer, enrollment_key, settings):
    settings.PULSEGUARD_BREAKER_FAILURES = 2
    agent = _agent(enrollment_key)
    _failed_once(agent, kind="flaky.job")
    _failed_once(agent, kind="flaky.job")
    client.force_login(viewer)
    html = client.get(f"/agents/{agent.pk}/").content.decode()
    assert 'data-testid="breaker"' in html and "<strong>open</strong> until" in html
    assert html.count("flaky.job") >= 2
