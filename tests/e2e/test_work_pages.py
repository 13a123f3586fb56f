"""The task, coordination and controls pages in a real browser against the live server.

Work is seeded through the services (task_create, tasks_claim, task_complete/task_fail)
for agents registered like real ones, so every figure on the page is read from attempts.
Screenshots land in tests/e2e/artifacts/screens/ (1440 and 390 px wide).
"""

import re

import pytest
from playwright.sync_api import expect

from apps.security.roles import Role
from tests.conftest import make_user
from tests.e2e.support import ARTIFACTS, in_thread, login, wait_live

pytestmark = pytest.mark.e2e

SCREENS = ARTIFACTS / "screens"
GiB = 2**30
PHONE = {"width": 390, "height": 844}


def _shot(page, name, *, full_page=True):
    SCREENS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENS / f"{name}.png"), full_page=full_page)


def _no_horizontal_overflow(page):
    widths = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    assert widths[0] <= widths[1], f"the page is {widths[0]} px wide in a {widths[1]} px window"


def seed_work() -> dict:
    """Two agents, finished and failed work, a GPU task placed on a device, a task that
    cannot be placed, a cancelled one. Returns ids by name."""
    from apps.agents import services as agents
    from apps.workflows import services
    from apps.workflows.events import tasks_changed

    _, key = agents.enrollment_key_create(name="work")
    cpu, _ = agents.agent_register(
        enrollment_key=key, name="etl-runner-01", kind="agent", capabilities=["python", "sql"], labels={"team": "data"},
        version="1.8.0", host={"hostname": "etl-01.prod.internal", "cpu_count": 16, "memory_total_bytes": 64 * GiB, "gpus": []},
        model="gpt-4o-mini", provider="openai")
    gpu, _ = agents.agent_register(
        enrollment_key=key, name="gpu-box-a", kind="agent", capabilities=["python", "cuda"], labels={"pool": "train"},
        version="1.8.0", host={"hostname": "gpu-a.prod.internal", "cpu_count": 64, "memory_total_bytes": 512 * GiB,
                               "gpus": [{"index": i, "name": "NVIDIA H100 80GB HBM3", "memory_total_bytes": 80 * GiB}
                                        for i in range(2)]},
        model="llama-3.1-70b", provider="local")
    ids = {"cpu_agent": str(cpu.pk), "gpu_agent": str(gpu.pk)}

    def run(agent, kind, *, fail=None, message="", **create):
        task, _ = services.task_create(kind=kind, required_capabilities=["python"], max_attempts=1, **create)
        services.tasks_claim(agent=agent, limit=1)
        if fail:
            services.task_fail(agent=agent, task_id=task.pk, error_type=fail, message=message)
        else:
            services.task_complete(agent=agent, task_id=task.pk, result={"rows": 1200, "ok": True})
        return task.pk

    for i in range(6):
        ids[f"ok{i}"] = run(cpu, "report.build", payload={"report": f"daily-{i}"})
    ids["rate_limited"] = run(cpu, "llm.summarize", fail="rate_limit", message="429 Too Many Requests from api.openai.com")
    ids["conn"] = run(cpu, "report.build", fail="connection", message="could not connect to warehouse.internal:5432")
    placed, _ = services.task_create(kind="lora.train", required_capabilities=["cuda"], payload={"dataset": "support-v3"},
                                     resources={"class": "gpu", "vram_mb": 40000}, model="llama-3.1-8b")
    services.tasks_claim(agent=gpu, limit=1)
    ids["placed"] = placed.pk
    waiting, _ = services.task_create(kind="vision.embed", required_capabilities=["tpu"], priority=5)
    ids["waiting"] = waiting.pk
    cancelled, _ = services.task_create(kind="email.notify")
    services.task_cancel(task_id=cancelled.pk)
    ids["cancelled"] = cancelled.pk
    tasks_changed([ids["placed"], ids["waiting"], ids["cancelled"]], added=True)
    return ids


def _create_task(kind="report.build", **kw):
    from apps.workflows import services

    task, _ = services.task_create(kind=kind, **kw)
    return task.pk


def test_a_task_created_from_the_form_appears_live_in_the_list(new_page, live_url):
    make_user("oscar-operator", Role.OPERATOR)
    watcher = new_page()
    login(watcher, "oscar-operator")
    watcher.goto("/tasks/")
    wait_live(watcher)
    expect(watcher.locator("#task-rows")).to_contain_text("No tasks yet.")

    page = new_page()
    login(page, "oscar-operator")
    page.goto("/tasks/")
    page.locator("#task-new summary").click()
    page.get_by_role("textbox", name="Kind", exact=True).fill("report.build")
    page.get_by_label("Payload").fill('{"report": "weekly"')
    page.get_by_role("button", name="Queue task").click()
    expect(page.get_by_test_id("error-payload")).to_contain_text("Not valid JSON")  # shown inline, nothing written
    page.get_by_label("Payload").fill('{"report": "weekly"}')
    page.get_by_label("Capabilities").fill("python")
    page.get_by_label("Priority").fill("3")
    page.get_by_role("button", name="Queue task").click()
    expect(page.get_by_test_id("task-state")).to_have_text("Queued")
    expect(page.get_by_test_id("payload")).to_contain_text('"report": "weekly"')

    # The other operator's list grew by itself.
    expect(watcher.locator("#task-rows tr.task-row")).to_have_count(1)
    expect(watcher.locator("#task-rows")).to_contain_text("report.build")
    expect(watcher.get_by_test_id("count-queued")).to_have_text("1")


def test_an_operator_cancels_then_retries_a_task_from_its_page(new_page, live_url):
    make_user("oscar-operator", Role.OPERATOR)
    task_id = in_thread(_create_task, "report.build", payload={"report": "q3"})
    page = new_page()
    login(page, "oscar-operator")
    page.goto(f"/tasks/{task_id}/")
    wait_live(page)
    expect(page.get_by_test_id("task-state")).to_have_text("Queued")

    page.get_by_role("button", name="Cancel task").click()
    expect(page.locator(".flash")).to_contain_text(f"Task #{task_id} cancelled")
    expect(page.get_by_test_id("task-state")).to_have_text("Cancelled")
    expect(page.get_by_role("button", name="Cancel task")).to_have_count(0)

    page.get_by_label("Priority boost").fill("5")
    page.get_by_role("button", name="Retry").click()
    expect(page.locator(".flash")).to_contain_text("queued again with priority +5")
    expect(page.get_by_test_id("task-state")).to_have_text("Queued")
    expect(page.locator("#task-head")).to_contain_text("Priority5")


def test_a_viewer_sees_a_task_without_buttons(new_page, live_url):
    make_user("vera-viewer", Role.VIEWER)
    task_id = in_thread(_create_task)
    page = new_page()
    login(page, "vera-viewer")
    page.goto(f"/tasks/{task_id}/")
    expect(page.get_by_test_id("task-state")).to_have_text("Queued")
    expect(page.get_by_role("button", name="Cancel task")).to_have_count(0)
    page.goto("/controls/")
    expect(page.get_by_test_id("dispatch-state")).to_contain_text("running")
    expect(page.get_by_test_id("control-pause")).to_have_count(0)


def test_coordination_shows_real_rates_patterns_and_a_live_queue(new_page, live_url):
    make_user("oscar-operator", Role.OPERATOR)
    ids = in_thread(seed_work)
    page = new_page()
    login(page, "oscar-operator")
    page.goto("/coordination/")
    expect(page.get_by_test_id("fleet-rate")).to_have_text("75%")  # 6 of 8 finished attempts
    expect(page.get_by_test_id("fleet-failed")).to_have_text("2")
    expect(page.locator('[data-pattern="rate_limit"]')).to_contain_text("429 Too Many Requests")
    expect(page.locator('[data-pattern="connection"]')).to_contain_text("What to do")
    expect(page.locator("#rate-by-agent")).to_contain_text("etl-runner-01")
    expect(page.locator("#oldest-waiting")).to_contain_text("no online agent has the capabilities it needs (tpu)")
    expect(page.get_by_test_id("depth-agentgpu")).to_have_text("1")  # vision.embed routes to a GPU
    expect(page.get_by_test_id("depth-agentcpu")).to_have_text("0")
    expect(page.locator("#live-indicator .label")).to_have_text("refreshes every 5 s")

    in_thread(_create_task, "report.build")
    expect(page.get_by_test_id("depth-agentcpu")).to_have_text("1", timeout=8_000)  # the panel polls

    # An example links to its task.
    page.locator('[data-pattern="rate_limit"] .examples a').first.click()
    expect(page).to_have_url(re.compile(rf"/tasks/{ids['rate_limited']}/$"))
    expect(page.locator("#task-attempts")).to_contain_text("rate_limit")


def test_pause_with_confirmation_shows_a_banner_until_resumed(new_page, live_url):
    make_user("oscar-operator", Role.OPERATOR)
    page = new_page()
    login(page, "oscar-operator")
    page.goto("/controls/")
    expect(page.get_by_test_id("paused-banner")).to_have_count(0)

    page.get_by_test_id("control-pause").click()
    expect(page.get_by_role("heading", name="Confirm: Pause dispatch")).to_be_visible()
    page.get_by_label("Type pause to confirm").fill("paws")
    page.get_by_label("Reason").fill("warehouse failover")
    page.get_by_role("button", name="Pause dispatch").click()
    expect(page.get_by_test_id("confirm-error")).to_contain_text("nothing was done")
    expect(page.get_by_test_id("paused-banner")).to_have_count(0)

    page.get_by_label("Type pause to confirm").fill("pause")
    page.get_by_role("button", name="Pause dispatch").click()
    expect(page.locator(".flash")).to_contain_text("Dispatch paused")
    expect(page.get_by_test_id("paused-banner")).to_contain_text("warehouse failover")
    expect(page.locator("#audit-records")).to_contain_text("pause")
    _shot(page, "controls-paused")
    page.goto("/tasks/")
    expect(page.get_by_test_id("paused-banner")).to_be_visible()

    page.goto("/controls/")
    page.get_by_test_id("control-resume").click()
    page.get_by_label("Type resume to confirm").fill("resume")
    page.get_by_role("button", name="Resume dispatch").click()
    expect(page.locator(".flash")).to_contain_text("Dispatch resumed")
    expect(page.get_by_test_id("paused-banner")).to_have_count(0)
    expect(page.locator("#audit-records tbody tr")).to_have_count(2)


def test_work_pages_look_right_at_1440_and_390(new_page, live_url):
    make_user("oscar-operator", Role.OPERATOR)
    ids = in_thread(seed_work)
    for viewport, suffix in (({"width": 1440, "height": 900}, "1440"), (PHONE, "390")):
        page = new_page(viewport=viewport)
        login(page, "oscar-operator")
        pages = [
            ("tasks", "/tasks/", lambda p: expect(p.locator("#task-rows tr.task-row")).to_have_count(11)),
            ("task-gpu", f"/tasks/{ids['placed']}/", lambda p: expect(p.get_by_test_id("placement")).to_contain_text("gpu-box-a · GPU 0")),
            ("task-failed", f"/tasks/{ids['conn']}/", lambda p: expect(p.get_by_test_id("task-state")).to_have_text("Failed")),
            ("coordination", "/coordination/", lambda p: expect(p.get_by_test_id("fleet-rate")).to_have_text("75%")),
            ("controls-confirm", "/controls/stop-all/", lambda p: expect(p.locator("#confirm")).to_be_visible()),
            ("agent-work", f"/agents/{ids['cpu_agent']}/", lambda p: expect(p.get_by_test_id("breaker")).to_contain_text("closed")),
        ]
        for name, url, check in pages:
            page.goto(url)
            check(page)
            _no_horizontal_overflow(page)
            _shot(page, f"{name}-{suffix}")
        page.goto("/tasks/")
        page.locator("#task-new summary").click()
        _no_horizontal_overflow(page)
        _shot(page, f"tasks-form-{suffix}")
