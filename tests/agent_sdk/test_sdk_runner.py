"""AgentRunner against a real HTTP server: commands, acks, backoff, rejection, goodbye."""

import threading

import pytest

from pulseguard_agent import AgentConfig, AgentRejected, AgentRunner, Backoff, Client, PulseGuardError


class RecordingBackoff(Backoff):
    """Tiny, jitter-free delays, and a record of them."""

    def __init__(self):
        super().__init__(base=0.01, factor=2, cap=0.05, jitter=0)
        self.delays: list[float] = []

    def delay(self, attempt: int) -> float:
        self.delays.append(super().delay(attempt))
        return self.delays[-1]


def _registered(server, name="runner-01") -> Client:
    client = Client(server.url, sleep=lambda s: None)
    client.register(server.key, name, host={})
    return client


def _run_in_thread(runner: AgentRunner) -> threading.Thread:
    thread = threading.Thread(target=runner.run, daemon=True)
    thread.start()
    return thread


def test_runner_acks_commands_and_drains(server):
    client = _registered(server)
    drain = server.queue_command(client.agent_id, "drain")
    isolate = server.queue_command(client.agent_id, "isolate", {"reason": "bad outputs"})
    config = server.queue_command(client.agent_id, "config", {"max_tokens": 2048})
    runner = AgentRunner(client, state="busy", readings=lambda: {"cpu_percent": 12.5}, telemetry=False)

    runner.run_once()
    runner.run_once()

    assert server.acked[drain]["ok"] and server.acked[isolate]["ok"] and server.acked[config]["ok"]
    assert runner.state == "draining" and runner.isolated and runner.remote_config == {"max_tokens": 2048}
    first, second = server.to("heartbeat")
    assert first.body["state"] == "busy" and first.body["readings"] == {"cpu_percent": 12.5}
    assert second.body["state"] == "draining"


def test_runner_release_clears_isolation(server):
    client = _registered(server)
    runner = AgentRunner(client, readings=None)
    server.queue_command(client.agent_id, "isolate")
    runner.run_once()
    server.queue_command(client.agent_id, "release")

    runner.run_once()

    assert not runner.isolated
    assert "readings" not in server.to("heartbeat")[0].body


def test_runner_acks_unknown_and_failing_commands_as_failed(server):
    client = _registered(server)
    unknown = server.queue_command(client.agent_id, "dance")
    broken = server.queue_command(client.agent_id, "config", {"x": 1})
    runner = AgentRunner(client, readings=None, handlers={"config": lambda command: 1 / 0})

    runner.run_once()

    assert server.acked[unknown] == {"ok": False, "message": "unsupported command type 'dance'"}
    assert server.acked[broken] == {"ok": False, "message": "ZeroDivisionError: division by zero"}


def test_restart_hook_runs_after_the_ack_is_sent(server):
    client = _registered(server)
    restart = server.queue_command(client.agent_id, "restart")
    seen = []
    runner = AgentRunner(client, readings=None, on_restart=lambda command: seen.append((command["id"], dict(server.acked))))

    runner.run_once()

    assert seen == [(restart, {restart: {"ok": True, "message": "restarting"}})]
    assert not runner.restart_requested


def test_restart_without_a_hook_is_acknowledged_and_ignored(server):
    client = _registered(server)
    restart = server.queue_command(client.agent_id, "restart")

    AgentRunner(client, readings=None).run_once()

    assert server.acked[restart]["ok"] and "no restart hook" in server.acked[restart]["message"]


def test_runner_resends_an_ack_the_server_did_not_get(server):
    client = _registered(server)
    drain = server.queue_command(client.agent_id, "drain")
    server.script("ack", 503, {"error": {"code": "unavailable", "message": "db down"}}, times=2)
    runner = AgentRunner(client, readings=None)

    runner.run_once()
    assert drain not in server.acked
    runner.run_once()

    assert server.acked[drain]["ok"]


def test_runner_backs_off_while_the_server_is_unreachable_then_recovers(server):
    client = _registered(server)
    server.script("heartbeat", 503, {"error": {"code": "unavailable", "message": "down"}}, times=3)
    backoff = RecordingBackoff()
    runner = AgentRunner(client, readings=None, interval_s=0.01, backoff=backoff)
    thread = _run_in_thread(runner)

    server.wait_for("heartbeat", 5)
    runner.stop()
    thread.join(5)

    assert backoff.delays == [0.01, 0.02, 0.04]  # one per failure, growing; reset on success
    assert not thread.is_alive() and len(server.to("goodbye")) == 1


def test_runner_stops_with_a_clear_error_when_its_token_is_replaced(server, caplog):
    client = _registered(server, "contested")
    Client(server.url).register(server.key, "contested", host={}, replace=True)  # another process takes over
    runner = AgentRunner(client, readings=None, interval_s=0.01)

    with pytest.raises(AgentRejected) as error:
        runner.run()

    assert (error.value.status, error.value.code) == (401, "invalid_token")
    assert "re-registered" in str(error.value)
    assert runner.error is error.value
    assert "rejected this agent" in caplog.text
    assert server.to("goodbye") == []  # the name belongs to the other process now


def test_runner_says_goodbye_when_stopped(server):
    client = _registered(server)
    runner = AgentRunner(client, readings=None, interval_s=0.01)
    thread = _run_in_thread(runner)

    server.wait_for("heartbeat", 2)
    runner.stop()
    thread.join(5)

    assert not thread.is_alive()
    assert len(server.to("goodbye")) == 1
    assert server.to("goodbye")[0].headers["Authorization"] == f"Bearer {client.token}"


def test_runner_registers_from_its_config_retrying_while_the_server_is_down(server):
    server.script("register", 503, {"error": {"code": "unavailable", "message": "starting"}}, times=2)
    config = AgentConfig(url=server.url, enrollment_key=server.key, name="from-config", capabilities=["qa"])
    client = Client(server.url, max_attempts=1)
    runner = AgentRunner(client, config=config, readings=None, interval_s=0.01, backoff=RecordingBackoff())
    thread = _run_in_thread(runner)

    server.wait_for("heartbeat")
    runner.stop()
    thread.join(5)

    registers = server.to("register")
    assert len(registers) == 3 and registers[-1].body["capabilities"] == ["qa"]
    assert client.registered and len(server.to("goodbye")) == 1


def test_runner_raises_when_registration_is_refused(server):
    config = AgentConfig(url=server.url, enrollment_key="wrong", name="locked-out")
    runner = AgentRunner(Client(server.url), config=config, readings=None)

    with pytest.raises(PulseGuardError) as error:
        runner.run()

    assert (error.value.status, error.value.code) == (401, "invalid_enrollment_key")


def test_a_broken_readings_callable_does_not_stop_the_heartbeat(server):
    def broken():
        raise OSError("sensor gone")

    client = _registered(server)
    AgentRunner(client, readings=broken).run_once()

    assert server.to("heartbeat")[0].body == {"state": "idle"}


def test_with_telemetry_on_readings_travel_only_in_telemetry_batches(server):
    """Each reading is stored once: not in the heartbeat and again in a batch."""
    client = _registered(server)
    AgentRunner(client, readings=lambda: {"cpu_percent": 12.5}).run_once()
    assert "readings" not in server.to("heartbeat")[0].body


def test_runner_rejects_an_unknown_state(server):
    with pytest.raises(ValueError, match="state"):
        AgentRunner(_registered(server), state="sleeping")


def test_figures_json_cannot_carry_are_left_out_of_the_heartbeat(server):
    nan = float("nan")
    readings = {"cpu_percent": nan, "load1": 0.5, "gpus": [{"index": 0, "temperature_c": float("inf"), "power_w": 80.0}]}
    client = _registered(server)

    AgentRunner(client, readings=lambda: readings, telemetry=False).run_once()

    assert server.to("heartbeat")[0].body["readings"] == {"load1": 0.5, "gpus": [{"index": 0, "power_w": 80.0}]}
