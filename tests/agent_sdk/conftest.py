"""A real HTTP server on 127.0.0.1 speaking the agent API contract, for SDK tests.

Nothing here touches Django: the SDK runs on agent hosts and is tested the same way,
over real sockets. The server keeps just enough state to behave like PulseGuard
(names, current tokens, commands delivered once, acks once, telemetry samples kept per
agent, a task queue with leases held per agent), validates request bodies against the
contract (unknown fields are a 400, as on the real server; telemetry as
docs/telemetry.md says), records every request, and lets a test script the next
responses of an endpoint. test_sdk_server_e2e.py and test_sdk_tasks_e2e.py run the SDK
against the real PulseGuard server as well.
"""

from __future__ import annotations

import gzip
import json
import math
import re
import sys
import threading
import time
import uuid
from collections import defaultdict, deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # the SDK is importable from a checkout without installing it
    sys.path.insert(0, str(ROOT))

KEY = "pge_test_enrollment_key"
REGISTER_FIELDS = {"name", "kind", "capabilities", "labels", "version", "host", "model", "provider", "replace"}
HOST_FIELDS = {"hostname", "os", "cpu_count", "memory_total_bytes", "gpus"}
GPU_INVENTORY_FIELDS = {"index", "uuid", "name", "memory_total_bytes"}
HEARTBEAT_FIELDS = {"state", "readings", "latency_ms", "task_ids"}
READING_FIELDS = {"cpu_percent", "load1", "memory_used_bytes", "memory_total_bytes", "gpus"}
GPU_READING_FIELDS = {"index", "utilization_percent", "memory_used_bytes", "memory_total_bytes", "temperature_c", "power_w"}
ACK_FIELDS = {"ok", "message"}
CLAIM_FIELDS = {"limit", "wait"}
FAIL_FIELDS = {"error_type", "message", "retryable"}
ERROR_TYPES = {"timeout", "connection", "rate_limit", "serialization", "lease_lost", "agent_error", "rejected",
               "resource", "cancelled", "unknown"}
# docs/telemetry.md: field -> check ("pct" 0-100, "num" >= 0, "int" whole >= 0, "temp", "str", "any")
SAMPLE_FIELDS = {
    "host": {"cpu_percent": "pct", "load1": "num", "load5": "num", "load15": "num", "memory_used_bytes": "int",
             "memory_total_bytes": "int", "disk_used_bytes": "int", "disk_total_bytes": "int",
             "disk_read_bytes_per_s": "num", "disk_write_bytes_per_s": "num", "net_rx_bytes_per_s": "num",
             "net_tx_bytes_per_s": "num"},
    "gpu": {"index": "int", "uuid": "str", "utilization_percent": "pct", "memory_util_percent": "pct",
            "memory_used_bytes": "int", "memory_free_bytes": "int", "memory_total_bytes": "int", "temperature_c": "temp",
            "power_w": "num", "power_limit_w": "num", "sm_clock_mhz": "num", "mem_clock_mhz": "num", "energy_mj": "num",
            "ecc_sbe_total": "int", "ecc_dbe_total": "int", "xid_errors": "int", "processes": "any"},
    "llm": {"provider": "str", "model": "str", "operation": "str", "tokens_in": "int", "tokens_out": "int",
            "tokens_cached": "int", "latency_ms": "num", "ttft_ms": "num", "status": "str", "error_type": "str",
            "cost_usd": "num", "session_id": "str", "workflow_id": "str", "task_id": "str"},
    "custom": {"name": "str", "type": "str", "value": "any", "labels": "any"},
}
SAMPLE_REQUIRED = {"host": (), "gpu": ("index",), "llm": ("provider", "model"), "custom": ("name", "value")}
MAX_SAMPLES = 5000
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,119}$")
ROUTES = [
    ("register", re.compile(r"^/api/v1/agents/register$")),
    ("heartbeat", re.compile(r"^/api/v1/agents/(?P<agent>[^/]+)/heartbeat$")),
    ("ack", re.compile(r"^/api/v1/agents/(?P<agent>[^/]+)/commands/(?P<command>[^/]+)/ack$")),
    ("goodbye", re.compile(r"^/api/v1/agents/(?P<agent>[^/]+)/goodbye$")),
    ("metrics", re.compile(r"^/api/v1/agents/(?P<agent>[^/]+)/metrics$")),
    ("claim", re.compile(r"^/api/v1/tasks/claim$")),
    ("renew", re.compile(r"^/api/v1/tasks/renew$")),
    ("complete", re.compile(r"^/api/v1/tasks/(?P<task>\d+)/complete$")),
    ("fail", re.compile(r"^/api/v1/tasks/(?P<task>\d+)/fail$")),
]


@dataclass
class Recorded:
    endpoint: str
    path: str
    headers: dict
    body: dict | None
    connection: tuple  # the client's (host, port): one per TCP connection
    at: float = field(default_factory=time.monotonic)


@dataclass
class Scripted:
    status: int
    body: dict | None = None
    headers: dict = field(default_factory=dict)
    delay: float = 0.0


class ContractServer:
    """The agent API in miniature. `url`, `requests`, `script()`, `queue_command()`."""

    heartbeat_interval_s = 1
    key = KEY

    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self.agents: dict[str, dict] = {}  # name -> {"id", "token"}
        self.commands: dict[str, deque] = defaultdict(deque)  # agent id -> undelivered commands
        self.acked: dict[str, dict] = {}
        self.samples: dict[str, list] = defaultdict(list)  # agent id -> samples stored, in arrival order
        self.delay: dict[str, float] = {}
        self.queue: deque[dict] = deque()  # tasks waiting to be claimed
        self.holders: dict[int, str] = {}  # task id -> the agent id holding it
        self.finished: dict[int, tuple] = {}  # task id -> ("complete", result) | ("fail", body) | ("cancelled",)
        self._task_ids = iter(range(1, 10**9))
        self._scripts: dict[str, deque] = defaultdict(deque)
        self._lock = threading.RLock()  # handlers call helpers that take it too
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        # A short poll interval keeps shutdown (and so each test's teardown) quick.
        self._thread = threading.Thread(target=self.httpd.serve_forever, args=(0.02,), daemon=True)

    def script(self, endpoint: str, status: int, body: dict | None = None, *, headers: dict | None = None,
               delay: float = 0.0, times: int = 1) -> None:
        """The next `times` requests to `endpoint` get this response instead of the normal one."""
        for _ in range(times):
            self._scripts[endpoint].append(Scripted(status, body, headers or {}, delay))

    def queue_command(self, agent_id: str, type: str, args: dict | None = None) -> str:
        command_id = str(uuid.uuid4())
        self.commands[agent_id].append(
            {"id": command_id, "type": type, "args": args or {}, "issued_at": "2026-01-01T00:00:00Z"}
        )
        return command_id

    def queue_task(self, kind: str = "code.review", payload: dict | None = None, **fields) -> int:
        """Queue a task for agents to claim; returns its id."""
        task_id = next(self._task_ids)
        with self._lock:
            self.queue.append({"id": task_id, "kind": kind, "payload": payload or {}, "attempt": 1,
                               "lease_expires_at": "2026-01-01T00:05:00Z", "attempt_timeout_s": 300,
                               "resource_class": "cpu", "vram_mb": None, **fields})
        return task_id

    def cancel_task(self, task_id: int) -> None:
        """What an operator's cancel does: the holder loses the task."""
        with self._lock:
            self.holders.pop(task_id, None)
            self.finished[task_id] = ("cancelled",)

    def to(self, endpoint: str) -> list[Recorded]:
        return [r for r in list(self.requests) if r.endpoint == endpoint]

    def wait_for(self, endpoint: str, count: int = 1, timeout: float = 10.0) -> list[Recorded]:
        deadline = time.monotonic() + timeout
        while len(self.to(endpoint)) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"expected {count} {endpoint} requests, got {len(self.to(endpoint))}")
            time.sleep(0.01)
        return self.to(endpoint)

    # --- the contract ------------------------------------------------------------------

    def handle(self, endpoint: str, params: dict, bearer: str | None, body: dict | None) -> tuple[int, dict | None, dict]:
        with self._lock:
            scripted = self._scripts[endpoint].popleft() if self._scripts[endpoint] else None
        if scripted is not None:
            time.sleep(scripted.delay)
            return scripted.status, scripted.body, scripted.headers
        time.sleep(self.delay.get(endpoint, 0.0))
        if endpoint == "claim":  # a long poll: waits without holding the lock
            return self._claim(bearer, body or {}) + ({},)
        with self._lock:
            return getattr(self, f"_{endpoint}")(params, bearer, body or {}) + ({},)

    def _register(self, params, bearer, body):
        if bearer != KEY:
            return 401, _error("invalid_enrollment_key", "Unknown enrollment key")
        bad = _unknown(body, REGISTER_FIELDS) or _unknown(body.get("host", {}), HOST_FIELDS, "host.")
        for gpu in body.get("host", {}).get("gpus", []):
            bad = bad or _unknown(gpu, GPU_INVENTORY_FIELDS, "host.gpus.")
        if not NAME_RE.match(body.get("name", "")):
            bad = bad or {"name": ["Use letters, digits and . _ : @ - (max 120)."]}
        if bad:
            return 400, _error("invalid", "Invalid input", bad)
        name = body["name"]
        if name in self.agents and not body.get("replace"):
            return 409, _error("name_taken", f"An agent named {name!r} is already registered")
        agent_id = self.agents[name]["id"] if name in self.agents else str(uuid.uuid5(uuid.NAMESPACE_DNS, name))
        token = f"pga_{uuid.uuid4().hex}"
        self.agents[name] = {"id": agent_id, "token": token}
        return 201, {"id": agent_id, "token": token, "heartbeat_interval_s": self.heartbeat_interval_s}

    def _heartbeat(self, params, bearer, body):
        refused = self._check_token(params["agent"], bearer)
        if refused:
            return refused
        readings = body.get("readings") or {}
        bad = _unknown(body, HEARTBEAT_FIELDS) or _unknown(readings, READING_FIELDS, "readings.")
        for gpu in readings.get("gpus", []):
            bad = bad or _unknown(gpu, GPU_READING_FIELDS, "readings.gpus.")
        if body.get("state", "idle") not in ("idle", "busy", "draining"):
            bad = bad or {"state": ["Not a valid choice."]}
        if not 0 <= readings.get("cpu_percent", 0) <= 100:
            bad = bad or {"readings.cpu_percent": ["Out of range."]}
        if bad:
            return 400, _error("invalid", "Invalid input", bad)
        queue = self.commands[params["agent"]]
        commands = [queue.popleft() for _ in range(len(queue))]
        tasks = self._leases(params["agent"], body["task_ids"]) if "task_ids" in body else None
        return 200, {"commands": commands, "heartbeat_interval_s": self.heartbeat_interval_s, "status": "online",
                     "tasks": tasks}

    def _ack(self, params, bearer, body):
        refused = self._check_token(params["agent"], bearer)
        if refused:
            return refused
        if _unknown(body, ACK_FIELDS):
            return 400, _error("invalid", "Invalid input", _unknown(body, ACK_FIELDS))
        if params["command"] in self.acked:
            return 409, _error("already_acknowledged", "Command already acknowledged")
        self.acked[params["command"]] = body
        return 200, {"id": params["command"], "status": "done" if body.get("ok", True) else "failed"}

    def _goodbye(self, params, bearer, body):
        return self._check_token(params["agent"], bearer) or (204, None)

    def _metrics(self, params, bearer, body):
        refused = self._check_token(params["agent"], bearer)
        if refused:
            return refused
        samples = body.get("samples")
        if set(body) != {"samples"} or not isinstance(samples, list):
            return 400, _error("invalid", "Send {\"samples\": [...]}")
        if len(samples) > MAX_SAMPLES:
            return 413, _error("batch_too_large", f"At most {MAX_SAMPLES} samples per batch")
        bad = [problem for i, sample in enumerate(samples) for problem in _sample_problems(i, sample)]
        if bad:
            error = _error("invalid_samples", f"{len(bad)} invalid sample(s); nothing was stored")
            error["error"]["samples"] = bad
            return 400, error
        self.samples[params["agent"]].extend(samples)
        by_kind: dict = defaultdict(int)
        for sample in samples:
            by_kind[sample["kind"]] += 1
        return 200, {"accepted": len(samples), "by_kind": dict(by_kind)}

    def _claim(self, bearer, body):
        owner = self._owner(bearer)
        if owner is None:
            return 401, _error("invalid_token", "Unknown or replaced agent token")
        if _unknown(body, CLAIM_FIELDS) or not 1 <= body.get("limit", 1) <= 50 or not 0 <= body.get("wait", 0) <= 30:
            return 400, _error("invalid", "Invalid input", _unknown(body, CLAIM_FIELDS))
        deadline = time.monotonic() + body.get("wait", 0)
        while True:
            with self._lock:
                claimed = [self.queue.popleft() for _ in range(min(body.get("limit", 1), len(self.queue)))]
                for task in claimed:
                    self.holders[task["id"]] = owner["id"]
            if claimed or time.monotonic() >= deadline:
                return 200, {"tasks": claimed}
            time.sleep(0.01)

    def _renew(self, params, bearer, body):
        owner = self._owner(bearer)
        if owner is None:
            return 401, _error("invalid_token", "Unknown or replaced agent token")
        if set(body) != {"task_ids"} or not body["task_ids"]:
            return 400, _error("invalid", "Send {\"task_ids\": [...]}")
        return 200, self._leases(owner["id"], body["task_ids"])

    def _leases(self, agent_id, task_ids):
        renewed = sorted(t for t in task_ids if self.holders.get(t) == agent_id)
        return {"renewed": renewed, "lost": sorted(set(task_ids) - set(renewed))}

    def _complete(self, params, bearer, body):
        if set(body) - {"result"}:
            return 400, _error("invalid", "Invalid input", _unknown(body, {"result"}))
        return self._finish(params, bearer, ("complete", body.get("result", {})))

    def _fail(self, params, bearer, body):
        if _unknown(body, FAIL_FIELDS) or body.get("error_type", "agent_error") not in ERROR_TYPES:
            return 400, _error("invalid", "Invalid input", {"error_type": ["Not a valid choice."]})
        return self._finish(params, bearer, ("fail", body))

    def _finish(self, params, bearer, outcome):
        owner = self._owner(bearer)
        if owner is None:
            return 401, _error("invalid_token", "Unknown or replaced agent token")
        task_id = int(params["task"])
        if task_id in self.finished:
            return 409, _error("already_finished", f"Task {task_id} is already finished")
        if self.holders.get(task_id) != owner["id"]:
            return 409, _error("not_holder", f"Task {task_id} is not held by this agent")
        del self.holders[task_id]
        self.finished[task_id] = outcome
        return 200, {"id": task_id, "state": "succeeded" if outcome[0] == "complete" else "failed"}

    def _owner(self, bearer):
        with self._lock:
            return next((a for a in self.agents.values() if a["token"] == bearer), None)

    def _check_token(self, agent_id, bearer):
        owner = next((a for a in self.agents.values() if a["token"] == bearer), None)
        if owner is None:
            return 401, _error("invalid_token", "Unknown or replaced agent token")
        if owner["id"] != agent_id:
            return 403, _error("token_agent_mismatch", "This token belongs to another agent")
        return None


def _sample_problems(index: int, sample) -> list[dict]:
    def bad(field, reason):
        return {"index": index, "field": field, "reason": reason}

    if not isinstance(sample, dict) or sample.get("kind") not in SAMPLE_FIELDS:
        return [bad("kind", "must be host, gpu, llm or custom")]
    kind, problems = sample["kind"], []
    if not isinstance(sample.get("ts"), (int, float, str)):
        problems.append(bad("ts", "must be an RFC 3339 time or Unix seconds"))
    for field, value in sample.items():
        if field in ("kind", "ts"):
            continue
        check = SAMPLE_FIELDS[kind].get(field)
        number = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        if check is None:
            problems.append(bad(field, "unknown field"))
        elif check == "str" and not isinstance(value, str):
            problems.append(bad(field, "must be a string"))
        elif check in ("pct", "num", "int", "temp") and not number:
            problems.append(bad(field, "must be a finite number"))
        elif (check == "pct" and not 0 <= value <= 100) or (check in ("num", "int") and value < 0):
            problems.append(bad(field, "out of range"))
        elif check == "int" and value != int(value):
            problems.append(bad(field, "must be an integer"))
        elif check == "temp" and not -50 <= value <= 200:
            problems.append(bad(field, "out of range"))
    problems += [bad(field, "is required") for field in SAMPLE_REQUIRED[kind] if field not in sample]
    if kind == "llm" and sample.get("status", "ok") not in ("ok", "error"):
        problems.append(bad("status", "must be ok or error"))
    if kind == "llm" and sample.get("error_type") and sample.get("status") != "error":
        problems.append(bad("error_type", "only with status error"))
    return problems


def _error(code: str, message: str, fields: dict | None = None) -> dict:
    return {"error": {"code": code, "message": message, **({"fields": fields} if fields else {})}}


def _unknown(data: dict, allowed: set, prefix: str = "") -> dict:
    return {f"{prefix}{name}": ["Unknown field."] for name in sorted(set(data) - allowed)}


def _handler_for(server: ContractServer):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as a production server does
        # Buffered writes send headers and body in one segment; two small writes would meet
        # Nagle and delayed ACK and add ~40 ms to every round trip.
        wbufsize = 64 * 1024

        def do_POST(self):
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if self.headers.get("Content-Encoding") == "gzip":
                raw = gzip.decompress(raw)
            body = json.loads(raw) if raw else None
            auth = self.headers.get("Authorization", "")
            bearer = auth[len("Bearer "):] if auth.startswith("Bearer ") else None
            for endpoint, pattern in ROUTES:
                match = pattern.match(self.path)
                if match:
                    recorded = Recorded(endpoint, self.path, dict(self.headers), body, self.client_address)
                    status, out, headers = server.handle(endpoint, match.groupdict(), bearer, body)
                    # Recorded once handled, so a test that saw the request also sees its effects.
                    server.requests.append(recorded)
                    return self._send(status, out, headers)
            self._send(404, _error("not_found", "No such endpoint"), {})

        def _send(self, status: int, body: dict | None, headers: dict) -> None:
            data = b"" if body is None else json.dumps(body).encode()
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            if body is not None:
                self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format, *args):  # keep test output readable
            pass

    return Handler


@pytest.fixture(autouse=True)
def spool_dir(tmp_path, monkeypatch) -> Path:
    """Where agents started by a test spool telemetry: never the real ~/.local/state."""
    path = tmp_path / "spool"
    monkeypatch.setenv("PULSEGUARD_SPOOL_DIR", str(path))
    return path


@pytest.fixture
def server():
    """A running ContractServer; shut down after the test."""
    s = ContractServer()
    s._thread.start()
    yield s
    s.httpd.shutdown()
    s.httpd.server_close()


class SleepRecorder(list):
    """A `sleep` hook that records the delays it was asked for instead of waiting."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


@pytest.fixture
def sleeps() -> SleepRecorder:
    return SleepRecorder()
