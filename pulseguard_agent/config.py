"""Who an agent is and where it reports: validated before anything is sent.

Checking the name and labels here turns a typo into an error at startup, with the
reason, instead of a 400 from the server on every restart.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pulseguard_agent._version import __version__

if TYPE_CHECKING:
    from pulseguard_agent.client import Client

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,119}$")
KINDS = ("agent", "worker")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


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
        PULSEGUARD_LABELS (k=v,k=v), PULSEGUARD_MODEL, PULSEGUARD_PROVIDER, PULSEGUARD_REPLACE.
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


def parse_bool(value: str, name: str) -> bool:
    """A boolean environment variable; anything unrecognised is an error, not False."""
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError(f"{name} must be true or false (got {value!r})")
