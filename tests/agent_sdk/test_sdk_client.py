"""Client against a real HTTP server: identity, latency, retries, errors, keep-alive."""

import socket

import pytest

from pulseguard_agent import Backoff, Client, PulseGuardError, ServerUnavailable, __version__


def _client(server, sleeps=None, **kwargs) -> Client:
    kwargs.setdefault("backoff", Backoff(base=0.5, factor=2, cap=30, jitter=0))
    return Client(server.url, sleep=sleeps if sleeps is not None else (lambda s: None), **kwargs)


def test_it_registers_and_sends_the_token(server):
    client = _client(server)

    response = client.register(server.key, "coder-01", capabilities=["code-gen"], labels={"team": "devex"},
                               model="gpt-4o", provider="openai", host={"hostname": "h1"})
    client.heartbeat()

    register, heartbeat = server.to("register")[0], server.to("heartbeat")[0]
    assert register.headers["Authorization"] == f"Bearer {server.key}"
    assert register.body == {
        "name": "coder-01", "kind": "agent", "capabilities": ["code-gen"], "labels": {"team": "devex"},
        "version": __version__, "host": {"hostname": "h1"}, "model": "gpt-4o", "provider": "openai", "replace": False,
    }
    assert client.agent_id == response["id"] and client.token == response["token"]
    assert client.heartbeat_interval_s == server.heartbeat_interval_s
    assert heartbeat.path == f"/api/v1/agents/{response['id']}/heartbeat"
    assert heartbeat.headers["Authorization"] == f"Bearer {response['token']}"
    assert heartbeat.body == {"state": "idle"}


def test_it_describes_this_machine_when_no_host_is_given(server):
    client = _client(server)

    client.register(server.key, "self-described")

    host = server.to("register")[0].body["host"]
    assert set(host) == {"hostname", "os", "cpu_count", "memory_total_bytes", "gpus"}
    assert host["hostname"] == socket.gethostname() and host["cpu_count"] >= 1 and host["memory_total_bytes"] > 0


def test_it_sends_latency_of_previous_heartbeat(server):
    client = _client(server)
    client.register(server.key, "timed", host={})
    server.delay["heartbeat"] = 0.05

    client.heartbeat("busy")
    first_round_trip = client.last_latency_ms
    client.heartbeat("busy")

    first, second = server.to("heartbeat")
    assert "latency_ms" not in first.body
    assert second.body["latency_ms"] == first_round_trip
    assert 50 <= first_round_trip < 5000


def test_it_retries_then_succeeds_when_server_returns_503(server, sleeps):
    client = _client(server, sleeps)
    client.register(server.key, "patient", host={})
    server.script("heartbeat", 503, {"error": {"code": "unavailable", "message": "restarting"}}, times=2)

    response = client.heartbeat()

    assert response["status"] == "online"
    assert len(server.to("heartbeat")) == 3
    assert sleeps == [0.5, 1.0]  # exponential (jitter off in this test)


def test_retry_delays_are_jittered_and_capped():
    backoff = Backoff(base=1, factor=2, cap=8, jitter=0.5)

    delays = [backoff.delay(attempt) for attempt in range(1, 8)]

    assert 0.5 <= delays[0] <= 1 and 1 <= delays[1] <= 2
    assert all(4 <= d <= 8 for d in delays[3:])
    assert backoff.delay(10_000) <= 8  # no overflow in a long outage


def test_it_does_not_retry_a_409(server, sleeps):
    _client(server).register(server.key, "taken", host={})
    client = _client(server, sleeps)

    with pytest.raises(PulseGuardError) as error:
        client.register(server.key, "taken", host={})

    assert (error.value.status, error.value.code) == (409, "name_taken")
    assert not error.value.transient
    assert len(server.to("register")) == 2 and sleeps == []
    assert not client.registered


def test_it_takes_over_a_name_with_replace_and_the_old_token_stops_working(server):
    old = _client(server)
    old.register(server.key, "twin", host={})
    new = _client(server)

    new.register(server.key, "twin", host={}, replace=True)

    assert new.agent_id == old.agent_id and new.token != old.token
    with pytest.raises(PulseGuardError) as error:
        old.heartbeat()
    assert (error.value.status, error.value.code) == (401, "invalid_token")


def test_it_reports_the_fields_the_server_rejected(server):
    with pytest.raises(PulseGuardError) as error:
        _client(server).register(server.key, "bad name!", host={})

    assert error.value.status == 400 and "name" in error.value.fields


def test_it_waits_as_long_as_a_429_asks(server, sleeps):
    client = _client(server, sleeps)
    server.script("register", 429, {"error": {"code": "throttled", "message": "slow down"}}, headers={"Retry-After": "7"})

    client.register(server.key, "polite", host={})

    assert sleeps == [7.0]
    assert client.registered


def test_it_gives_up_after_max_attempts(server, sleeps):
    client = _client(server, sleeps, max_attempts=3)
    server.script("register", 502, {"error": {"code": "bad_gateway", "message": "upstream"}}, times=5)

    with pytest.raises(ServerUnavailable) as error:
        client.register(server.key, "unlucky", host={})

    assert error.value.status == 502 and error.value.transient
    assert len(server.to("register")) == 3 and len(sleeps) == 2


def test_it_raises_server_unavailable_when_nothing_listens(sleeps):
    with socket.socket() as probe:  # a port that was free a moment ago
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = Client(f"http://127.0.0.1:{port}", sleep=sleeps, max_attempts=2)

    with pytest.raises(ServerUnavailable) as error:
        client.register("key", "lonely", host={})

    assert error.value.status is None and "Cannot reach" in str(error.value)
    assert len(sleeps) == 1


def test_it_keeps_one_connection_for_many_requests(server):
    client = _client(server)
    client.register(server.key, "frugal", host={})

    for _ in range(5):
        client.heartbeat()

    assert len({r.connection for r in server.requests}) == 1


def test_it_reconnects_after_the_server_closes_the_connection(server, sleeps):
    client = _client(server, sleeps)
    client.register(server.key, "resilient", host={})
    closing = {"commands": [], "heartbeat_interval_s": 1, "status": "online"}
    server.script("heartbeat", 200, closing, headers={"Connection": "close"})

    client.heartbeat()
    client.heartbeat()

    first, second = server.to("heartbeat")
    assert first.connection != second.connection
    assert sleeps == []  # a closed keep-alive connection is not a failure


def test_it_acknowledges_commands_and_says_goodbye(server):
    client = _client(server)
    client.register(server.key, "obedient", host={})
    command_id = server.queue_command(client.agent_id, "drain")

    commands = client.heartbeat()["commands"]
    client.ack(commands[0]["id"], ok=False, message="x" * 5000)
    client.goodbye()

    assert commands[0]["id"] == command_id
    assert server.acked[command_id] == {"ok": False, "message": "x" * 1000}  # trimmed to what the server accepts
    assert server.to("goodbye")[0].body is None
    with pytest.raises(PulseGuardError) as error:
        client.ack(command_id)
    assert error.value.code == "already_acknowledged"


def test_it_needs_an_identity_before_heartbeating(server):
    with pytest.raises(RuntimeError, match="register"):
        _client(server).heartbeat()


def test_it_rejects_a_url_that_is_not_http():
    with pytest.raises(ValueError, match="http"):
        Client("ftp://example.com")
