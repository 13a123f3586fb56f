"""The telemetry spool and sender over real sockets: a closed port is a real outage, no mocks.

What must hold: batches the server cannot take are kept on disk (whole files, bounded,
oldest dropped first), replayed oldest-first when it answers again, also by the next
process; a batch the server refuses as invalid is dropped, never retried forever.
"""

import os
import socket
import stat
import threading
import time

import pytest

from pulseguard_agent import (
    AgentRejected, AgentRunner, Client, PulseGuardError, Spool, Telemetry, TelemetryBuffer, TelemetryConfig,
    TelemetrySender,
)
from pulseguard_agent.samples import decode_batch, encode_batch


def _closed_port_url() -> str:
    """A URL nothing listens on: connecting is refused at once, as when the server is down."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def _hosts(n: int, start: float | None = None, **fields) -> list[dict]:
    start = time.time() - 60 if start is None else start
    return [{"kind": "host", "ts": round(start + i * 0.001, 3), "cpu_percent": 10.0, **fields} for i in range(n)]


def _registered(server, name: str = "spooler") -> Client:
    client = Client(server.url, sleep=lambda s: None)
    client.register(server.key, name, host={})
    return client


def _down(client: Client) -> Client:
    """The same identity, pointed at a server that is not there."""
    return Client(_closed_port_url(), token=client.token, agent_id=client.agent_id, max_attempts=1)


def _sender(client: Client, spool_dir, **spool_kwargs) -> TelemetrySender:
    return TelemetrySender(client, TelemetryBuffer(), Spool(spool_dir, **spool_kwargs))


# --- the spool on its own -----------------------------------------------------------------


def test_spool_files_are_whole_private_and_a_crashed_write_leaves_nothing_behind(tmp_path):
    spool = Spool(tmp_path / "spool")
    samples = _hosts(3)

    path = spool.put(encode_batch(samples), len(samples))

    assert os.listdir(spool.directory) == [path.name] and path.name.endswith("-3.json.gz")
    assert decode_batch(path.read_bytes()) == samples
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_IMODE(spool.directory.stat().st_mode) == 0o700
    (spool.directory / f".tmp-{path.name}").write_bytes(b"\x1f\x8b half a bat")  # a process died mid-write

    reopened = Spool(spool.directory)

    assert reopened.files() == [path]
    assert os.listdir(spool.directory) == [path.name]


def test_a_full_spool_drops_the_oldest_batches_and_keeps_the_newest(tmp_path, caplog):
    payloads = [encode_batch(_hosts(10, start=time.time() - 100 + i)) for i in range(5)]
    size = max(len(p) for p in payloads)
    spool = Spool(tmp_path, max_bytes=3 * size + 10)

    paths = [spool.put(payload, 10) for payload in payloads]

    assert spool.files() == paths[2:]
    assert [spool.read(p) for p in spool.files()] == payloads[2:]
    assert (spool.dropped_batches, spool.dropped_samples) == (2, 20)
    assert spool.size_bytes <= spool.max_bytes
    assert "oldest dropped first" in caplog.text


def test_a_batch_larger_than_the_whole_spool_is_dropped_itself(tmp_path):
    spool = Spool(tmp_path, max_bytes=100)
    kept = spool.put(b"x" * 60, 1)

    assert spool.put(os.urandom(500), 7) is None

    assert spool.files() == [kept] and spool.dropped_samples == 7


def test_names_stay_in_order_across_a_restart_even_if_the_clock_steps_back(tmp_path, monkeypatch):
    first = Spool(tmp_path).put(b"a", 1)
    monkeypatch.setattr(time, "time_ns", lambda: 1)  # the clock is reset to 1970

    second = Spool(tmp_path).put(b"b", 1)

    assert Spool(tmp_path).files() == [first, second]


# --- sending through the spool ----------------------------------------------------------


def test_batches_wait_in_the_spool_while_the_server_is_down(server, tmp_path):
    sender = _sender(_down(_registered(server)), tmp_path)
    sender.buffer.extend(_hosts(7000))

    assert sender.flush() == 0

    files = sender.spool.files()
    assert [Spool.samples_in(f) for f in files] == [5000, 2000]  # at most 5,000 a batch
    assert sender.stats["spooled"] == 7000 and len(sender.buffer) == 0 and not sender.reachable
    assert server.to("metrics") == []


def test_a_restarted_agent_replays_the_spool_oldest_first_then_sends_new_samples(server, tmp_path):
    client = _registered(server)
    down = _sender(_down(client), tmp_path)
    batches = [_hosts(3, start=time.time() - 300 + 60 * i) for i in range(3)]
    for batch in batches:
        down.buffer.extend(batch)
        down.flush()
    assert len(down.spool) == 3

    # A new process: a new spool object on the same directory, the server back.
    up = _sender(client, tmp_path)
    fresh = _hosts(2, start=time.time() - 5)
    up.buffer.extend(fresh)
    sent = up.flush()

    assert sent == 11 and up.stats["replayed"] == 9
    assert server.samples[client.agent_id] == [s for batch in batches for s in batch] + fresh
    assert up.spool.files() == []
    assert all(r.headers["Content-Encoding"] == "gzip" for r in server.to("metrics"))


@pytest.mark.parametrize("status, code", [(503, "unavailable"), (500, "server_error"), (429, "throttled")])
def test_a_failing_or_throttling_server_gets_the_batch_again_later(server, tmp_path, status, code):
    client = _registered(server)
    server.script("metrics", status, {"error": {"code": code, "message": "not now"}})
    sender = _sender(client, tmp_path)
    samples = _hosts(4)
    sender.buffer.extend(samples)

    sender.flush()
    assert len(sender.spool) == 1 and server.samples[client.agent_id] == []
    sender.flush()

    assert server.samples[client.agent_id] == samples and sender.spool.files() == []


def test_a_batch_the_server_refuses_as_invalid_is_dropped_not_retried(server, tmp_path, caplog):
    client = _registered(server)
    server.script("metrics", 400, {"error": {"code": "invalid_samples", "message": "bad batch"}})
    sender = _sender(client, tmp_path)
    sender.buffer.extend(_hosts(5))

    sender.flush()
    sender.flush()

    assert sender.stats["dropped_invalid"] == 5 and sender.stats["sent"] == 0
    assert sender.spool.files() == [] and len(server.to("metrics")) == 1
    assert "refused and dropped" in caplog.text


def test_only_the_samples_the_server_names_are_dropped_and_the_rest_sent_once_more(server, tmp_path):
    client = _registered(server)
    sender = _sender(client, tmp_path)
    good = _hosts(3)
    sender.buffer.extend([good[0], {**good[1], "fan_rpm": 1200}, good[2]])  # a field the API does not know

    sender.flush()

    assert server.samples[client.agent_id] == [good[0], good[2]]
    assert (sender.stats["sent"], sender.stats["dropped_invalid"]) == (2, 1)
    assert len(server.to("metrics")) == 2 and sender.spool.files() == []


def test_an_invalid_batch_found_in_the_spool_is_removed(server, tmp_path):
    client = _registered(server)
    spool = Spool(tmp_path)
    spool.put(encode_batch([{"kind": "gpu", "ts": time.time()}]), 1)  # no index: refused whole

    sender = TelemetrySender(client, TelemetryBuffer(), spool)
    sender.flush()

    assert spool.files() == [] and sender.stats["dropped_invalid"] == 1


def test_a_batch_too_large_for_the_server_is_split_in_halves(server, tmp_path):
    client = _registered(server)
    server.script("metrics", 413, {"error": {"code": "batch_too_large", "message": "too big"}})
    sender = _sender(client, tmp_path)
    samples = _hosts(10)
    sender.buffer.extend(samples)

    sender.flush()

    assert [len(r.body["samples"]) for r in server.to("metrics")] == [10, 5, 5]
    assert server.samples[client.agent_id] == samples


def test_a_rejected_agent_gets_an_error_and_its_batch_is_kept(server, tmp_path):
    client = _registered(server)
    Client(server.url).register(server.key, "spooler", host={}, replace=True)  # another process takes the name
    sender = _sender(client, tmp_path)
    sender.buffer.extend(_hosts(2))

    with pytest.raises(PulseGuardError) as error:
        sender.flush()

    assert (error.value.status, error.value.code) == (401, "invalid_token")
    assert [Spool.samples_in(f) for f in sender.spool.files()] == [2]


def test_without_a_spool_unsent_batches_are_counted_as_dropped(server):
    sender = TelemetrySender(_down(_registered(server)), TelemetryBuffer(), None)
    sender.buffer.extend(_hosts(3))

    sender.flush()

    assert sender.stats["dropped_unsent"] == 3 and len(sender.buffer) == 0


# --- the runner ---------------------------------------------------------------------------


def _fast_telemetry(client: Client, agent: str, **overrides) -> Telemetry:
    settings = TelemetryConfig.from_env(metrics_interval_s=0.05, flush_interval_s=0.05, **overrides)
    return Telemetry.from_config(client, settings, agent=agent, buffer=TelemetryBuffer())


def _wait(predicate, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.01)
    return value


def _start(runner: AgentRunner) -> threading.Thread:
    thread = threading.Thread(target=runner.run, daemon=True)
    thread.start()
    return thread


def test_the_runner_sends_host_samples_and_recorded_llm_calls_on_their_own_schedule(server):
    client = _registered(server, "telemetry-runner")
    runner = AgentRunner(client, readings=None, interval_s=0.05, telemetry=_fast_telemetry(client, "telemetry-runner"))
    runner.record_llm_call("openai", "gpt-4o-mini", tokens_in=1200, tokens_out=310, tokens_cached=1024,
                           latency_ms=1830.0, ttft_ms=420.0, session_id="conv-91")
    thread = _start(runner)

    samples = server.samples[client.agent_id]
    _wait(lambda: sum(s["kind"] == "host" for s in samples) >= 3)
    runner.stop()
    thread.join(5)

    llm = [s for s in samples if s["kind"] == "llm"]
    assert llm == [{"kind": "llm", "ts": llm[0]["ts"], "provider": "openai", "model": "gpt-4o-mini", "operation": "chat",
                    "tokens_in": 1200, "tokens_out": 310, "tokens_cached": 1024, "status": "ok", "latency_ms": 1830.0,
                    "ttft_ms": 420.0, "session_id": "conv-91"}]
    hosts = [s for s in samples if s["kind"] == "host"]
    assert all(0 < h["memory_used_bytes"] <= h["memory_total_bytes"] and h["disk_total_bytes"] > 0 for h in hosts)
    assert "cpu_percent" not in hosts[0] and "net_rx_bytes_per_s" in hosts[1]  # rates need a previous sample
    assert len(server.to("goodbye")) == 1 and not thread.is_alive()


def test_a_runner_restarted_after_an_outage_sends_what_the_last_one_spooled(server, spool_dir):
    client = _registered(server, "restarts")
    offline = _down(client)
    first = AgentRunner(offline, readings=None, interval_s=0.05, telemetry=_fast_telemetry(offline, "restarts"),
                        backoff=None)
    thread = _start(first)
    _wait(lambda: len(Spool(spool_dir / "restarts")) >= 2)
    first.stop()
    thread.join(10)
    spooled = [s for f in Spool(spool_dir / "restarts").files() for s in decode_batch(f.read_bytes())]
    assert spooled and server.samples[client.agent_id] == []

    second = AgentRunner(client, readings=None, interval_s=0.05, telemetry=_fast_telemetry(client, "restarts"))
    thread = _start(second)
    _wait(lambda: len(server.samples[client.agent_id]) >= len(spooled))
    second.stop()
    thread.join(5)

    assert server.samples[client.agent_id][:len(spooled)] == spooled  # first, and in order
    assert Spool(spool_dir / "restarts").files() == []


def test_the_runner_stops_when_the_server_rejects_its_telemetry(server):
    client = _registered(server, "telemetry-refused")
    server.script("metrics", 403, {"error": {"code": "token_agent_mismatch", "message": "not yours"}}, times=100)
    runner = AgentRunner(client, readings=None, interval_s=0.05, telemetry=_fast_telemetry(client, "telemetry-refused"))

    with pytest.raises(AgentRejected) as error:
        runner.run()

    assert (error.value.status, error.value.code) == (403, "token_agent_mismatch")
    assert runner.error is error.value and server.to("goodbye") == []


def test_the_runner_spools_under_its_agent_name_from_the_environment(server, spool_dir, monkeypatch):
    monkeypatch.setenv("PULSEGUARD_METRICS_INTERVAL", "0.05")
    monkeypatch.setenv("PULSEGUARD_FLUSH_INTERVAL", "0.05")
    client = _registered(server, "from-env")
    server.script("metrics", 503, {"error": {"code": "unavailable", "message": "down"}}, times=1000)
    runner = AgentRunner(client, readings=None, interval_s=0.05)  # telemetry as PULSEGUARD_* say
    thread = _start(runner)

    _wait(lambda: len(Spool(spool_dir / client.agent_id)) >= 1)
    runner.stop()
    thread.join(5)

    assert runner.telemetry is not None and runner.telemetry.spool.directory == spool_dir / client.agent_id


def test_stopping_cuts_a_long_replay_short_and_leaves_the_rest_for_the_next_start(server, tmp_path):
    client = _registered(server)
    spool = Spool(tmp_path)
    for i in range(50):
        spool.put(encode_batch(_hosts(1, start=time.time() - 100 + i)), 1)
    server.delay["metrics"] = 0.05
    telemetry = Telemetry(client, buffer=TelemetryBuffer(), spool=spool, metrics_interval_s=60, flush_interval_s=60)
    telemetry.start()
    server.wait_for("metrics", 2)

    started = time.monotonic()
    telemetry.stop()

    assert time.monotonic() - started < 1
    left = len(spool)
    assert 0 < left <= 48 and left + len(server.samples[client.agent_id]) == 50
