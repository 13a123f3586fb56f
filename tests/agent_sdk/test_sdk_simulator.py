"""The simulator drives real Clients over HTTP; the contract server checks every payload."""

import random
import re
import statistics
import time

from pulseguard_agent import Client, Simulator, SimTiming
from pulseguard_agent.sim_host import FakeHost
from pulseguard_agent.sim_llm import FakeLLM

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
    # Readings travel in the telemetry batches, once, not in heartbeats too.
    assert not any("readings" in h.body for h in heartbeats)
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


# --- telemetry ------------------------------------------------------------------------------

GPU_FIELDS = {"kind", "ts", "index", "uuid", "utilization_percent", "memory_util_percent", "memory_used_bytes",
              "memory_free_bytes", "memory_total_bytes", "temperature_c", "power_w", "power_limit_w", "sm_clock_mhz",
              "mem_clock_mhz", "energy_mj", "ecc_sbe_total", "ecc_dbe_total", "processes"}
HOST_FIELDS = {"kind", "ts", "cpu_percent", "load1", "load5", "load15", "memory_used_bytes", "memory_total_bytes",
               "disk_used_bytes", "disk_total_bytes", "disk_read_bytes_per_s", "disk_write_bytes_per_s",
               "net_rx_bytes_per_s", "net_tx_bytes_per_s"}


def test_a_simulated_fleet_sends_host_and_gpu_telemetry_through_the_sdk(server):
    sim = Simulator(server.url, server.key, agents=8, fail_rate=0, silent_rate=0, interval=0.05, metrics_interval=0.05,
                    seed=7, timing=QUICK)

    _run(sim, 1.0)

    ids = {agent["id"]: name for name, agent in server.agents.items()}
    by_agent = {ids[agent_id]: samples for agent_id, samples in server.samples.items()}
    assert set(by_agent) == {p.name for p in sim.profiles}
    assert all(sum(s["kind"] == "host" for s in samples) >= 5 for samples in by_agent.values())
    assert all(set(s) == HOST_FIELDS for samples in by_agent.values() for s in samples if s["kind"] == "host")
    gpus = [s for s in by_agent["demo-gpu-infer-07"] if s["kind"] == "gpu"]
    assert gpus and all(set(s) == GPU_FIELDS for s in gpus)
    registered_uuids = {g["uuid"] for r in server.to("register") if r.body["name"] == "demo-gpu-infer-07"
                        for g in r.body["host"]["gpus"]}
    assert {s["uuid"] for s in gpus} == registered_uuids
    energy = [s["energy_mj"] for s in gpus if s["index"] == 0]
    assert energy == sorted(energy) and energy[-1] > energy[0]  # a counter: it only grows
    assert not any(s["kind"] == "gpu" for s in by_agent["demo-planner-00"])  # no GPUs, no GPU samples
    stats = sim.stats.snapshot()
    assert stats["telemetry_sent"] == sum(len(s) for s in server.samples.values())
    assert "telemetry_dropped_invalid" not in stats and "telemetry_spooled" not in stats


def test_simulated_llm_calls_follow_the_agents_model_and_fail_now_and_then(server):
    sim = Simulator(server.url, server.key, agents=8, seed=11)
    client = Client(server.url)
    client.register(server.key, "llm-sink", host={})
    end = time.time()

    calls = {p.name: FakeLLM(p, random.Random(p.seed)).calls("busy", False, end, 3600) for p in sim.profiles}

    everything = [c for cs in calls.values() for c in cs]
    assert client.send_metrics(everything)["accepted"] == len(everything)  # the contract takes every one
    for profile in sim.profiles:
        assert {(c["provider"], c["model"]) for c in calls[profile.name]} == {(profile.provider, profile.model)}
        assert all(end - 3600 <= c["ts"] <= end for c in calls[profile.name])
    errors = [c for c in everything if c["status"] == "error"]
    assert 0.01 < len(errors) / len(everything) < 0.08
    assert {c["error_type"] for c in errors} == {"rate_limit", "server_error", "timeout", "invalid_request"}
    chats = [c for c in everything if c["operation"] == "chat" and c["status"] == "ok"]
    assert 0.1 < sum(c["tokens_cached"] > 0 for c in chats) / len(chats) < 0.7
    assert all(c["tokens_cached"] <= c["tokens_in"] and c["latency_ms"] > c.get("ttft_ms", 0) for c in chats)
    assert any(c["operation"] == "embedding" and c["tokens_out"] == 0 for c in everything)
    sessions = {c["session_id"] for c in everything}
    assert len(everything) / 30 < len(sessions) < len(everything) / 2  # a session spans several calls
    by_model = {}
    for c in chats:
        by_model.setdefault(c["model"], []).append(c["latency_ms"] / max(c["tokens_out"], 1))
    if "claude-opus-4" in by_model and "gpt-4o-mini" in by_model:  # slower models are slower per token
        assert statistics.median(by_model["claude-opus-4"]) > statistics.median(by_model["gpt-4o-mini"])


def test_simulated_telemetry_is_the_same_under_the_same_seed(server):
    def telemetry(seed):
        profile = Simulator(server.url, server.key, agents=8, seed=seed).profiles[7]  # a GPU host
        host, llm = FakeHost(profile, random.Random(profile.seed)), FakeLLM(profile, random.Random(profile.seed))
        rounds = []
        for i, state in enumerate(["idle", "busy", "busy", "busy", "idle"]):
            ts = 1_800_000_000.0 + i * 10
            rounds.append(host.samples(state, False, ts, 10.0) + llm.calls(state, False, ts, 10.0))
        return rounds

    assert telemetry(5) == telemetry(5)
    assert telemetry(5) != telemetry(6)


def test_gpu_temperature_follows_utilization(server):
    profile = Simulator(server.url, server.key, agents=8, seed=2).profiles[7]
    host = FakeHost(profile, random.Random(1))

    idle = [host.samples("idle", False, float(i), 10.0)[1] for i in range(30)][-1]
    busy = [host.samples("busy", False, float(i), 10.0)[1] for i in range(30)][-1]

    assert busy["utilization_percent"] > 60 > 20 > idle["utilization_percent"]
    assert busy["temperature_c"] > idle["temperature_c"] + 15 and busy["power_w"] > idle["power_w"]
    assert busy["sm_clock_mhz"] > idle["sm_clock_mhz"] and busy["processes"][0]["used_memory_bytes"] > 0


def test_the_simulator_can_run_heartbeats_only(server):
    sim = Simulator(server.url, server.key, agents=2, fail_rate=0, silent_rate=0, interval=0.05, seed=1, timing=QUICK,
                    telemetry=False)

    _run(sim, 0.3)

    assert server.to("heartbeat") and server.to("metrics") == []
