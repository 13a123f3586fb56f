"""Who an agent is, where it reports, how it sends telemetry: validated before anything is sent.

Checking the name and labels here turns a typo into an error at startup, with the
reason, instead of a 400 from the server on every restart.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from pulseguard_agent._version import __version__
from pulseguard_agent.buffer import DEFAULT_FLUSH_AT
from pulseguard_agent.spool import DEFAULT_MAX_BYTES

if TYPE_CHECKING:
    from pulseguard_agent.client import Client

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,119}$")
KINDS = ("agent", "worker")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}
_SIZE_RE = re.compile(r"^\s*(\d+)\s*(|b|k|kb|kib|m|mb|mib|g|gb|gib)\s*$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "b": 1, "k": 1024, "kb": 1024, "kib": 1024, "m": 1024**2, "mb": 1024**2, "mib": 1024**2,
               "g": 1024**3, "gb": 1024**3, "gib": 1024**3}


@dataclass
class TelemetryConfig:
    """How an agent collects and sends telemetry (see docs/telemetry.md and spool.py).

    Host and GPU samples are taken every `metrics_interval_s`; buffered samples are sent
    every `flush_interval_s`, or as soon as `flush_at` wait. While the server is
    unreachable batches go to `spool_dir` (one subdirectory per agent), at most
    `spool_max_bytes`, oldest dropped first.
    """

    enabled: bool = True
    metrics_interval_s: float = 10.0
    flush_interval_s: float = 10.0
    flush_at: int = DEFAULT_FLUSH_AT
    spool_dir: str = ""  # default: default_spool_dir()
    spool_max_bytes: int = DEFAULT_MAX_BYTES

    def __post_init__(self) -> None:
        if not self.spool_dir:
            self.spool_dir = default_spool_dir()
        problems = []
        if not 0.05 <= self.metrics_interval_s <= 86_400:
            problems.append("metrics interval must be between 0.05 and 86400 seconds")
        if not 0.05 <= self.flush_interval_s <= 86_400:
            problems.append("flush interval must be between 0.05 and 86400 seconds")
        if not 1 <= self.flush_at <= 5000:
            problems.append("flush_at must be between 1 and 5000 samples")
        if self.spool_max_bytes < 0:
            problems.append("spool size must be >= 0 (0 turns the spool off)")
        if problems:
            raise ValueError("Invalid telemetry configuration: " + "; ".join(problems))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: object) -> TelemetryConfig:
        """Read PULSEGUARD_TELEMETRY (true/false), PULSEGUARD_METRICS_INTERVAL, PULSEGUARD_FLUSH_INTERVAL
        (seconds), PULSEGUARD_FLUSH_AT (samples), PULSEGUARD_SPOOL_DIR, PULSEGUARD_SPOOL_MAX_BYTES
        (bytes, or with a unit: 64MiB); keyword arguments that are not None take precedence.
        """
        env = os.environ if environ is None else environ
        values: dict[str, object] = {
            "enabled": parse_bool(env.get("PULSEGUARD_TELEMETRY", "true"), "PULSEGUARD_TELEMETRY"),
            "spool_dir": default_spool_dir(env),
        }
        numbers = (("metrics_interval_s", "PULSEGUARD_METRICS_INTERVAL", float),
                   ("flush_interval_s", "PULSEGUARD_FLUSH_INTERVAL", float), ("flush_at", "PULSEGUARD_FLUSH_AT", int))
        for key, name, kind in numbers:
            if env.get(name, "").strip():
                try:
                    values[key] = kind(env[name])
                except ValueError:
                    raise ValueError(f"{name} must be a number (got {env[name]!r})") from None
        if env.get("PULSEGUARD_SPOOL_MAX_BYTES", "").strip():
            values["spool_max_bytes"] = parse_size(env["PULSEGUARD_SPOOL_MAX_BYTES"], "PULSEGUARD_SPOOL_MAX_BYTES")
        values.update({key: value for key, value in overrides.items() if value is not None})
        return cls(**values)  # type: ignore[arg-type]

    def spool_path(self, agent: str) -> Path:
        """This agent's spool directory: batches are sent as whichever agent replays them."""
        return Path(self.spool_dir).expanduser() / re.sub(r"[^A-Za-z0-9._@-]", "_", agent).lstrip(".")


def default_spool_dir(environ: Mapping[str, str] | None = None) -> str:
    """PULSEGUARD_SPOOL_DIR, else $XDG_STATE_HOME/pulseguard-agent/spool, else ~/.local/state/pulseguard-agent/spool."""
    env = os.environ if environ is None else environ
    if env.get("PULSEGUARD_SPOOL_DIR"):
        return env["PULSEGUARD_SPOOL_DIR"]
    state = env.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return os.path.join(state, "pulseguard-agent", "spool")


@dataclass
class AgentConfig:
    """Registration settings for one agent (what `Client.register` sends, plus where to)."""

    url: str
    enrollment_key: str
    name: str
    kind: str = "agent"
    capabilities: list[str] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)
    version: str = __version__
    model: str = ""
    provider: str = ""
    replace: bool = False
    telemetry: TelemetryConfig = field(default_factory=TelemetryConfig)

    def __post_init__(self) -> None:
        problems = []
        if not self.url.startswith(("http://", "https://")):
            problems.append(f"url must start with http:// or https:// (got {self.url!r})")
        if not self.enrollment_key:
            problems.append("an enrollment key is required")
        if not NAME_RE.match(self.name):
            problems.append(f"name {self.name!r} must be 1-120 of letters, digits and . _ : @ - (not starting with a symbol)")
        if self.kind not in KINDS:
            problems.append(f"kind must be one of {', '.join(KINDS)} (got {self.kind!r})")
        if len(self.labels) > 50 or any(not key or len(key) > 100 for key in self.labels):
            problems.append("labels: at most 50, names 1-100 characters")
        if any(len(value) > 200 for value in self.labels.values()):
            problems.append("labels: values at most 200 characters")
        if len(self.capabilities) > 100 or any(not c or len(c) > 100 for c in self.capabilities):
            problems.append("capabilities: at most 100, each 1-100 characters")
        if problems:
            raise ValueError("Invalid agent configuration: " + "; ".join(problems))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: object) -> AgentConfig:
        """Read PULSEGUARD_* variables; keyword arguments that are not None take precedence.

        PULSEGUARD_URL, PULSEGUARD_ENROLLMENT_KEY, PULSEGUARD_AGENT_NAME (default: the
        hostname), PULSEGUARD_AGENT_KIND, PULSEGUARD_CAPABILITIES (comma-separated),
        PULSEGUARD_LABELS (k=v,k=v), PULSEGUARD_MODEL, PULSEGUARD_PROVIDER, PULSEGUARD_REPLACE,
        and the telemetry settings (`TelemetryConfig.from_env`).
        """
        env = os.environ if environ is None else environ
        values: dict[str, object] = {
            "url": env.get("PULSEGUARD_URL", ""),
            "enrollment_key": env.get("PULSEGUARD_ENROLLMENT_KEY", ""),
            "name": env.get("PULSEGUARD_AGENT_NAME") or default_name(),
            "kind": env.get("PULSEGUARD_AGENT_KIND", "agent"),
            "capabilities": split_list(env.get("PULSEGUARD_CAPABILITIES", "")),
            "labels": parse_labels(split_list(env.get("PULSEGUARD_LABELS", ""))),
            "model": env.get("PULSEGUARD_MODEL", ""),
            "provider": env.get("PULSEGUARD_PROVIDER", ""),
            "replace": parse_bool(env.get("PULSEGUARD_REPLACE", ""), "PULSEGUARD_REPLACE"),
        }
        if overrides.get("telemetry") is None:
            values["telemetry"] = TelemetryConfig.from_env(env)
        values.update({key: value for key, value in overrides.items() if value is not None})
        return cls(**values)  # type: ignore[arg-type]

    def register(self, client: Client) -> dict:
        """Register `client` with these settings; returns the server's response."""
        return client.register(
            self.enrollment_key,
            self.name,
            capabilities=self.capabilities,
            labels=self.labels,
            version=self.version,
            model=self.model,
            provider=self.provider,
            kind=self.kind,
            replace=self.replace,
        )


def default_name() -> str:
    """This machine's hostname, reduced to the characters an agent name allows."""
    name = re.sub(r"[^A-Za-z0-9._:@-]", "-", socket.gethostname()).lstrip("._:@-")[:120]
    return name or "agent"


def split_list(value: str) -> list[str]:
    """'a, b,,c' -> ['a', 'b', 'c']."""
    return [item.strip() for item in value.split(",") if item.strip()]


def parse_labels(items: Iterable[str]) -> dict[str, str]:
    """['team=search', 'region=eu'] -> {'team': 'search', 'region': 'eu'}."""
    labels = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"Label {item!r} must look like key=value")
        labels[key.strip()] = value.strip()
    return labels


def parse_size(value: str, name: str) -> int:
    """'67108864', '64MiB', '512k' -> bytes (powers of 1024); anything else is an error."""
    match = _SIZE_RE.match(value)
    if not match:
        raise ValueError(f"{name} must be a size in bytes, e.g. 67108864 or 64MiB (got {value!r})")
    return int(match.group(1)) * _SIZE_UNITS[match.group(2).lower()]


def parse_bool(value: str, name: str) -> bool:
    """A boolean environment variable; anything unrecognised is an error, not False."""
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError(f"{name} must be true or false (got {value!r})")
