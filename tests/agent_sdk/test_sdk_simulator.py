"""The simulator drives real Clients over HTTP; the contract server checks every payload."""

import re
import time

from pulseguard_agent import Simulator, SimTiming

QUICK = SimTiming(start_spread_s=0.05, stall_probability=0.0)


def _run(sim: Simulator, seconds: float) -> None:
    sim.start()
    try:
        time.sleep(seconds)
    finally:
        sim.stop()


def test_a_simulated_fleet_registers_heartbeats_and_says_goodbye(server):
    sim = Simulator(server.url, server.key, agents=10, prefix="demo", fail_rate=0, silent_rate=0,
                    interval=0.05, seed=7, timing=QUICK)

    _run(sim, 1.0)

    registers = server.to("register")
    names = {r.body["name"] for r in registers}
    assert len(names) == 10 and all(re.match(r"^demo-[a-z-]+-\d{2}$", n) for n in names)
    assert all(r.body["replace"] for r in registers)
    assert {"demo-planner-00", "demo-coder-01", "demo-gpu-infer-07"} <= names
    gpu_host = next(r.body["host"] for r in registers if r.body["name"] == "demo-gpu-infer-07")
    assert 1 <= len(gpu_host["gpus"]) <= 8 and gpu_host["gpus"][0]["name"].startswith("NVIDIA")
    heartbeats = server.to("heartbeat")
    assert len(heartbeats) >= 50
    assert {h.body["state"] for h in heartbeats} >= {"idle", "busy"}
    assert all(0 <= h.body["readings"]["cpu_percent"] <= 100 for h in heartbeats)
    assert any(h.body["readings"].get("gpus") for h in heartbeats)
    assert len(server.to("goodbye")) == 10
    stats = sim.stats.snapshot()
    assert stats["registrations"] == 10 and stats["goodbyes"] == 10 and stats["latency_ms"]["p50"] > 0
    assert "heartbeat_refusals" not in stats  # the contract server accepted every payload


def test_the_same_seed_gives_the_same_fleet(server):
    def fleet(seed):
        return [(p.name, p.labels, p.model, p.host, p.silent_prone, p.flaky) for p in
                Simulator(server.url, server.key, agents=20, seed=seed).profiles]

    assert fleet(3) == fleet(3)
    assert fleet(3) != fleet(4)


def test_rates_pick_an_exact_share_of_the_fleet(server):
    sim = Simulator(server.url, server.key, agents=50, fail_rate=0.05, silent_rate=0.1, seed=1)

    assert sum(p.silent_prone for p in sim.profiles) == 5
    assert sum(p.flaky for p in sim.profiles) == 3
    assert not any(p.silent_prone and p.flaky for p in sim.profiles)


def test_simulated_agents_obey_drain_isolate_and_restart(server):
    sim = Simulator(server.url, server.key, agents=3, fail_rate=0, silent_rate=0, interval=0.05, seed=2,
                    timing=SimTiming(start_spread_s=0.05, stall_probability=0.0, restart_pause_s=(0.1, 0.1)))
    sim.start()
    try:
        server.wait_for("register", 3)
        ids = {name: agent["id"] for name, agent in server.agents.items()}
        drain = server.queue_command(ids["demo-planner-00"], "drain")
        isolate = server.queue_command(ids["demo-coder-01"], "isolate")
        restart = server.queue_command(ids["demo-reviewer-02"], "restart")
        server.wait_for("register", 4)
        time.sleep(0.3)
    finally:
        sim.stop()

    assert all(server.acked[c]["ok"] for c in (drain, isolate, restart))
    planner = [h for h in server.to("heartbeat") if h.path.endswith(f"{ids['demo-planner-00']}/heartbeat")]
    assert planner[-1].body["state"] == "draining"
    coder = sim.agents[1]
    assert coder.runner.isolated and coder.runner.state != "busy"
    reregistered = [r for r in server.to("register") if r.body["name"] == "demo-reviewer-02"]
    assert len(reregistered) == 2 and reregistered[1].body["replace"] is True
    assert sim.stats.snapshot()["restarts"] == 1


def test_silent_agents_stop_heartbeating_for_a_while_then_come_back(server):
    timing = SimTiming(start_spread_s=0.0, stall_probability=0.0, active_before_silence_s=(0.3, 0.3),
                       silence_s=(0.5, 0.5))
    sim = Simulator(server.url, server.key, agents=1, fail_rate=0, silent_rate=1, interval=0.05, seed=3, timing=timing)

    _run(sim, 1.5)

    times = [h.at for h in server.to("heartbeat")]
    gaps = [b - a for a, b in zip(times, times[1:])]
    silence_began = times[gaps.index(max(gaps))]
    assert max(gaps) >= 0.45  # the silence
    assert len([t for t in times if t > silence_began + 0.45]) >= 2  # and heartbeats again afterwards
    assert len(server.to("register")) == 1  # same identity: it was quiet, not dead
    assert sim.stats.snapshot()["silent"] >= 1


def test_flaky_agents_crash_and_register_again_with_a_new_token(server):
    timing = SimTiming(start_spread_s=0.0, stall_probability=0.0, active_before_crash_s=(0.2, 0.2),
                       crash_downtime_s=(0.2, 0.2))
    sim = Simulator(server.url, server.key, agents=1, fail_rate=1, silent_rate=0, interval=0.05, seed=4, timing=timing)

    _run(sim, 1.0)

    tokens = [h.headers["Authorization"] for h in server.to("heartbeat")]
    assert len(server.to("register")) >= 2 and len(set(tokens)) >= 2
    assert sim.stats.snapshot()["crashed"] >= 1


def test_the_simulation_stops_when_the_enrollment_key_is_refused(server):
    sim = Simulator(server.url, "not-the-key", agents=3, interval=0.05, seed=5, timing=QUICK)
    started = time.monotonic()

    sim.start()
    sim.wait(10)
    sim.stop()

    assert time.monotonic() - started < 5
    assert sim.error is not None and sim.error.code == "invalid_enrollment_key"
    assert server.to("heartbeat") == [] and server.to("goodbye") == []
