"""Simulated task work: plans drawn per attempt, GPU memory held while working, the fleet over HTTP."""

from __future__ import annotations

import random
import time
from collections import Counter

from pulseguard_agent import SimTiming, Simulator
from pulseguard_agent.sim_fleet import MIB, make_profiles
from pulseguard_agent.sim_host import FakeHost
from pulseguard_agent.sim_work import fail_rate, plan_attempt
from pulseguard_agent.worker import ClaimedTask

QUICK = SimTiming(start_spread_s=0.05, stall_probability=0.0, task_time_scale=0.002, task_poll_s=(0.02, 0.05))


def _profiles(seed=7, n=8):
    return make_profiles(n, "demo", random.Random(seed), silent_rate=0, fail_rate=0)


def _plan(profile, task, *, rate=0.05, gpu=None):
    rng = random.Random(f"{profile.seed}:{task.id}:{task.attempt}")
    return plan_attempt(profile, task, rng, rate=rate, time_scale=1.0, gpu=gpu)


def test_the_same_attempt_on_the_same_agent_goes_the_same_way():
    reviewer = _profiles()[2]
    task = ClaimedTask(id=41, kind="code.review", payload={"pr": 7})

    assert _plan(reviewer, task) == _plan(reviewer, task)
    plans = {repr(_plan(reviewer, ClaimedTask(id=41, kind="code.review", payload={}, attempt=n))) for n in (1, 2, 3)}
    assert len(plans) == 3  # a retry is a new draw


def test_work_takes_a_time_typical_of_its_kind_and_fails_at_the_agents_rate():
    support, embedder = _profiles()[5], _profiles()[6]
    triage = [_plan(support, ClaimedTask(id=i, kind="ticket.triage", payload={}), rate=0.2) for i in range(2000)]
    embeds = [_plan(embedder, ClaimedTask(id=i, kind="embed.batch", payload={}, resource_class="gpu", vram_mb=8000),
                    rate=0.2, gpu=(0, 15000)) for i in range(2000)]

    ok = [p for p in triage if not p.error_type]
    assert all(3 <= p.seconds <= 15 for p in ok) and all(p.result["queue"] for p in ok)
    assert 0.06 < sum(bool(p.error_type) for p in triage) / 2000 < 0.14  # triage fails at half the rate
    errors = Counter(p.error_type for p in triage if p.error_type)
    assert set(errors) <= {"rate_limit", "timeout", "connection", "agent_error", "rejected"} and errors["rate_limit"]
    gpu_errors = Counter(p.error_type for p in embeds if p.error_type)
    assert gpu_errors["resource"] and not gpu_errors["rate_limit"]
    assert all(p.message for p in triage + embeds if p.error_type)


def test_a_gpu_task_without_room_fails_as_resource_and_a_poisoned_one_always_fails():
    embedder = _profiles()[6]
    no_room = _plan(embedder, ClaimedTask(id=1, kind="embed.batch", payload={}, resource_class="gpu", vram_mb=8000),
                    gpu=(None, 3000))
    poisoned = {_plan(embedder, ClaimedTask(id=2, kind="embed.batch", payload={"fail": True}, attempt=n)).error_type
                for n in range(1, 20)}

    assert no_room.error_type == "resource" and "8000 MiB" in no_room.message and "3000 MiB" in no_room.message
    assert poisoned == {"agent_error"}


def test_flaky_agents_fail_more_and_rates_are_fixed_by_the_seed():
    profiles = make_profiles(40, "demo", random.Random(3), silent_rate=0, fail_rate=0.25)

    calm = [fail_rate(p) for p in profiles if not p.flaky]
    flaky = [fail_rate(p) for p in profiles if p.flaky]
    assert max(calm) < 0.08 < 0.12 <= min(flaky)
    assert [fail_rate(p) for p in profiles] == [fail_rate(p) for p in make_profiles(
        40, "demo", random.Random(3), silent_rate=0, fail_rate=0.25)]


def test_gpu_memory_a_task_holds_shows_in_the_readings_and_batch_gpus_start_empty():
    gpu_infer = next(p for p in make_profiles(60, "demo", random.Random(1), silent_rate=0, fail_rate=0)
                     if p.role.name == "gpu-infer" and len(p.gpus) >= 4)
    host = FakeHost(gpu_infer, random.Random(1))
    before = host.readings("idle")["gpus"]
    total = before[-1]["memory_total_bytes"]
    assert before[0]["memory_used_bytes"] > 0.7 * total  # the served model
    assert before[-1]["memory_used_bytes"] < 0.02 * total  # a batch GPU, empty

    index, free = host.allocate(60000)
    after = host.readings("busy")["gpus"]

    assert index is not None and not host.serving[index] and free > 60000
    assert after[index]["memory_used_bytes"] >= 60000 * MIB
    second, _ = host.allocate(60000)
    assert second not in (None, index)  # the next empty batch GPU (a 4-GPU host has two)
    host.release(index, 60000)
    assert host.readings("idle")["gpus"][index]["memory_used_bytes"] < 0.05 * total


def test_a_simulated_fleet_works_the_queue_and_renews_with_its_heartbeats(server, monkeypatch):
    monkeypatch.setattr("pulseguard_agent.sim_work.fail_rate", lambda profile: 0.0)  # only the poisoned task fails
    reviews = [server.queue_task("code.review", {"pr": n}) for n in range(3)]
    triage = server.queue_task("ticket.triage", {"ticket": "SUP-1", "fail": True})
    finetune = server.queue_task("model.finetune", {"epochs": 1})  # minutes of work: a few heartbeats long
    sim = Simulator(server.url, server.key, agents=8, fail_rate=0, silent_rate=0, interval=0.05, seed=7, timing=QUICK,
                    metrics_interval=0.05, tasks=True)
    sim.start()
    try:
        deadline = time.monotonic() + 10
        while len(server.finished) < 5 and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        sim.stop()

    # The contract server hands tasks to whoever claims first; the real one matches capabilities.
    assert {server.finished[t][0] for t in reviews} == {"complete"}
    assert server.finished[triage][0] == "fail" and server.finished[triage][1]["error_type"] == "agent_error"
    assert server.finished[finetune][0] == "complete"
    assert any(h.body.get("task_ids") == [finetune] and h.body["state"] == "busy" for h in server.to("heartbeat"))
    assert {h.body["state"] for h in server.to("heartbeat")} == {"idle", "busy"}
    stats = sim.stats.snapshot()
    assert stats["tasks_claimed"] == 5 and stats["tasks_succeeded"] == 4 and stats["tasks_failed"] == 1
    calls = [s for samples in server.samples.values() for s in samples if s["kind"] == "llm" and s.get("task_id")]
    assert {c["task_id"] for c in calls} >= {str(t) for t in reviews}


def test_draining_and_isolated_simulated_agents_claim_nothing(server):
    sim = Simulator(server.url, server.key, agents=2, fail_rate=0, silent_rate=0, interval=0.05, seed=2, timing=QUICK,
                    tasks=True)
    sim.start()
    try:
        server.wait_for("register", 2)
        ids = [agent["id"] for agent in server.agents.values()]
        server.queue_command(ids[0], "drain")
        server.queue_command(ids[1], "isolate")
        deadline = time.monotonic() + 5
        while not all(a.runner.state == "draining" or a.runner.isolated for a in sim.agents):
            assert time.monotonic() < deadline
            time.sleep(0.02)
        time.sleep(0.2)  # a claim already under way may still land
        task_id = server.queue_task()
        time.sleep(0.5)
    finally:
        sim.stop()

    assert task_id not in server.holders and list(server.queue)[0]["id"] == task_id
