"""`python -m pulseguard_agent`: a real process, real signals, a real HTTP server."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from pulseguard_agent.cli import EXIT_RESTART, main
from pulseguard_agent.config import AgentConfig

ROOT = Path(__file__).resolve().parents[2]


def _agent_process(server, *args: str, **env: str) -> subprocess.Popen:
    environ = {**os.environ, "PYTHONPATH": str(ROOT), "PULSEGUARD_ENROLLMENT_KEY": server.key, **env}
    return subprocess.Popen(
        [sys.executable, "-m", "pulseguard_agent", "run", "--url", server.url, *args],
        env=environ, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def test_run_registers_heartbeats_and_says_goodbye_on_sigterm(server):
    agent = _agent_process(server, "--name", "cli-coder", "--capability", "code-gen", "--capability", "git",
                           "--label", "team=devex", "--model", "gpt-4o", "--provider", "openai", "--interval", "0.05")
    try:
        server.wait_for("heartbeat", 3)
        agent.send_signal(signal.SIGTERM)
        _, stderr = agent.communicate(timeout=10)
    finally:
        agent.kill()

    assert agent.returncode == 0, stderr
    body = server.to("register")[0].body
    assert (body["name"], body["capabilities"], body["labels"]) == ("cli-coder", ["code-gen", "git"], {"team": "devex"})
    assert (body["model"], body["provider"], body["replace"]) == ("gpt-4o", "openai", False)
    # Readings travel in telemetry batches (not in heartbeats too).
    assert "readings" not in server.to("heartbeat")[-1].body
    assert len(server.to("goodbye")) == 1 and "Said goodbye" in stderr


def test_run_exits_75_on_a_restart_command_when_asked_to(server):
    agent = _agent_process(server, "--on-restart", "exit", "--interval", "0.05", PULSEGUARD_AGENT_NAME="cli-env-name")
    try:
        server.wait_for("heartbeat")
        agent_id = server.agents["cli-env-name"]["id"]
        restart = server.queue_command(agent_id, "restart")
        agent.communicate(timeout=10)
    finally:
        agent.kill()

    assert agent.returncode == EXIT_RESTART
    assert server.acked[restart]["ok"] and len(server.to("goodbye")) == 1


def test_run_exits_1_with_the_reason_when_the_name_is_taken(server):
    server.agents["busy-name"] = {"id": "00000000-0000-0000-0000-000000000001", "token": "pga_other"}
    agent = _agent_process(server, "--name", "busy-name")

    _, stderr = agent.communicate(timeout=10)

    assert agent.returncode == 1
    assert "name_taken" in stderr


def test_run_rejects_a_malformed_label_before_contacting_the_server(server, capsys):
    code = main(["run", "--url", server.url, "--enrollment-key", "k", "--name", "x", "--label", "no-equals"])

    assert code == 2 and "key=value" in capsys.readouterr().err
    assert server.requests == []


def test_run_needs_a_url(capsys, monkeypatch):
    monkeypatch.delenv("PULSEGUARD_URL", raising=False)

    assert main(["run", "--enrollment-key", "k"]) == 2
    assert "PULSEGUARD_URL" in capsys.readouterr().err


def test_simulate_runs_for_the_duration_and_prints_its_figures(server, capsys):
    code = main(["simulate", "--url", server.url, "--enrollment-key", server.key, "--agents", "4", "--interval", "0.05",
                 "--duration", "0.6", "--fail-rate", "0", "--silent-rate", "0", "--seed", "1"])

    assert code == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["registrations"] == 4 and stats["goodbyes"] == 4 and stats["heartbeats"] > 4


def test_config_reads_the_environment_and_flags_win():
    env = {"PULSEGUARD_URL": "http://pg:8000", "PULSEGUARD_ENROLLMENT_KEY": "k", "PULSEGUARD_AGENT_NAME": "env-name",
           "PULSEGUARD_LABELS": "team=search, region=eu-west-1", "PULSEGUARD_CAPABILITIES": "rag,summarize",
           "PULSEGUARD_REPLACE": "yes"}

    config = AgentConfig.from_env(env, name="flag-name")

    assert config.name == "flag-name" and config.replace is True
    assert config.labels == {"team": "search", "region": "eu-west-1"} and config.capabilities == ["rag", "summarize"]


@pytest.mark.parametrize("bad", [{"name": "-starts-with-dash"}, {"kind": "robot"}, {"url": "pg:8000"}])
def test_config_refuses_what_the_server_would_refuse(bad):
    settings = {"url": "http://pg:8000", "enrollment_key": "k", "name": "ok", **bad}

    with pytest.raises(ValueError, match="Invalid agent configuration"):
        AgentConfig(**settings)


def test_inventory_prints_this_machine(capsys):
    assert main(["inventory"]) == 0

    report = json.loads(capsys.readouterr().out)
    assert report["host"]["cpu_count"] >= 1 and "memory_total_bytes" in report["readings"]
    host_sample = report["telemetry"][0]
    assert host_sample["kind"] == "host" and 0 <= host_sample["cpu_percent"] <= 100 and "disk_total_bytes" in host_sample


def _wait(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_run_sends_this_machines_telemetry_on_the_schedule_it_is_given(server, tmp_path):
    agent = _agent_process(server, "--name", "cli-telemetry", "--interval", "0.05", "--metrics-interval", "0.05",
                           "--flush-interval", "0.05", "--spool-dir", str(tmp_path / "spool"))
    try:
        server.wait_for("register")
        agent_id = server.agents["cli-telemetry"]["id"]
        _wait(lambda: sum(s["kind"] == "host" for s in server.samples[agent_id]) >= 3)
        agent.send_signal(signal.SIGTERM)
        _, stderr = agent.communicate(timeout=10)
    finally:
        agent.kill()

    assert agent.returncode == 0, stderr
    hosts = [s for s in server.samples[agent_id] if s["kind"] == "host"]
    assert hosts[-1]["memory_total_bytes"] == psutil.virtual_memory().total
    assert not (tmp_path / "spool" / "cli-telemetry").exists() or not os.listdir(tmp_path / "spool" / "cli-telemetry")


def test_run_without_telemetry_only_heartbeats(server):
    agent = _agent_process(server, "--name", "cli-quiet", "--interval", "0.05", "--no-telemetry")
    try:
        server.wait_for("heartbeat", 3)
        agent.send_signal(signal.SIGTERM)
        agent.communicate(timeout=10)
    finally:
        agent.kill()

    assert agent.returncode == 0 and server.to("metrics") == []
