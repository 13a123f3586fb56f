"""The demo task stream (`manage.py demo_tasks`) and the simulated fleet that runs it agree."""

from __future__ import annotations

import io

import pytest
from django.core.management import call_command

from apps.workflows.management.commands.demo_tasks import CATALOG
from pulseguard_agent.sim_fleet import MIB, ROLES
from pulseguard_agent.sim_work import KINDS

CELERY_KINDS = {"demo.echo", "demo.sleep"}


def _run(*args: str) -> str:
    out = io.StringIO()
    call_command("demo_tasks", *args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


@pytest.mark.django_db
def test_the_demo_stream_queues_a_mix_of_tasks_through_the_service():
    from apps.workflows.models import Task

    _run("--count", "60", "--rate", "100", "--seed", "3")

    tasks = list(Task.objects.all())
    assert len(tasks) == 60
    assert {t.kind for t in tasks} <= {spec.kind for spec in CATALOG} and len({t.kind for t in tasks}) >= 8
    assert all((t.runner == "celery") == (t.kind in CELERY_KINDS) for t in tasks)
    gpu = [t for t in tasks if t.resource_class == "gpu"]
    assert gpu and all(t.kind in ("embed.batch", "inference.batch", "model.finetune") and t.vram_mb for t in gpu)
    assert len({t.priority for t in tasks}) >= 3 and any(t.idempotency_key for t in tasks)
    reviews = [t for t in tasks if t.kind == "code.review"]
    assert all(t.required_capabilities == ["code-review"] and t.model for t in reviews)


@pytest.mark.django_db
def test_a_repeated_idempotency_key_gets_the_first_task():
    from apps.workflows.models import Task

    _run("--count", "30", "--rate", "100", "--seed", "5")
    keyed = Task.objects.exclude(idempotency_key=None).count()
    report = _run("--count", "30", "--rate", "100", "--seed", "5", "--max-queued", "1000")  # the same stream again

    assert keyed > 0 and f"{keyed} deduplicated" in report
    assert Task.objects.count() == 60 - keyed


@pytest.mark.django_db
def test_a_kind_with_a_backlog_is_skipped():
    from apps.workflows.models import Task

    report = _run("--count", "40", "--rate", "100", "--seed", "4", "--max-queued", "1")

    per_kind = {}
    for kind in Task.objects.values_list("kind", flat=True):
        per_kind[kind] = per_kind.get(kind, 0) + 1
    # The backlog count is refreshed every few seconds; within one refresh a kind gets one task.
    assert max(per_kind.values()) == 1 and "skipped (backlog)" in report


def test_the_simulated_fleet_can_run_every_demo_kind():
    for spec in CATALOG:
        if spec.kind in CELERY_KINDS:
            continue
        roles = [role for role in ROLES if set(spec.capabilities) <= set(role.capabilities)]
        assert roles, f"no simulated role has {spec.capabilities} for {spec.kind}"
        assert spec.kind in KINDS, f"sim_work.py does not know how {spec.kind} goes"
        vram = (spec.resources or {}).get("vram_mb")
        if vram:
            # Free memory of the best GPU a matching role can have: an empty batch GPU, or a
            # serving one less the served model.
            free = max(
                gpu.memory_bytes * (1 - (role.gpu_memory_target if role.serving_share >= 1 or max(role.gpu_counts) == 1
                                         else 0.006)) / MIB
                for role in roles for gpu in role.gpu_models
            )
            assert free >= vram, f"no simulated GPU has {vram} MiB free for {spec.kind}"
