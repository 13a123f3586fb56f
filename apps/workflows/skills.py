"""The skill registry: what Celery workers can run, by name.

A skill is a Python callable `fn(payload: dict) -> dict` registered with its resource
needs and the shape of its payload. Built-ins live here; deployments add their own with
PULSEGUARD_SKILLS (dotted paths of modules that call `skill(...)` on import). Task kinds
that are not registered skills are run by external agents that claim them over the API.
"""

from __future__ import annotations

import importlib
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from django.conf import settings


@dataclass(frozen=True)
class Field:
    type: type | tuple
    required: bool = False
    min: float | None = None
    max: float | None = None


@dataclass(frozen=True)
class Skill:
    name: str
    fn: Callable[[dict], dict]
    resource_class: str = "cpu"  # "cpu" | "gpu"
    vram_mb: int | None = None
    payload: dict[str, Field] = field(default_factory=dict)
    description: str = ""

    def check(self, payload: dict) -> dict[str, str]:
        """Problems with a payload, by field (empty when it is fine)."""
        problems = {}
        if not isinstance(payload, dict):
            return {"payload": "must be an object"}
        for name, spec in self.payload.items():
            if name not in payload:
                if spec.required:
                    problems[name] = "is required"
                continue
            value = payload[name]
            if isinstance(value, bool) and bool not in (spec.type if isinstance(spec.type, tuple) else (spec.type,)):
                problems[name] = "has the wrong type"
            elif not isinstance(value, spec.type):
                problems[name] = "has the wrong type"
            elif spec.min is not None and value < spec.min:
                problems[name] = f"must be at least {spec.min}"
            elif spec.max is not None and value > spec.max:
                problems[name] = f"must be at most {spec.max}"
        return problems


_REGISTRY: dict[str, Skill] = {}
_loaded = False


def skill(name: str, *, resource_class: str = "cpu", vram_mb: int | None = None, payload: dict | None = None,
          description: str = ""):
    """Decorator: register `fn` as the skill `name`."""
    def register(fn):
        _REGISTRY[name] = Skill(name, fn, resource_class, vram_mb, payload or {}, description or (fn.__doc__ or "").strip())
        return fn
    return register


def skills() -> dict[str, Skill]:
    global _loaded
    if not _loaded:
        for path in getattr(settings, "PULSEGUARD_SKILLS", []):
            importlib.import_module(path)
        _loaded = True
    return _REGISTRY


def skill_get(name: str) -> Skill | None:
    return skills().get(name)


# --- built-ins -------------------------------------------------------------------------

class SkillError(Exception):
    """A skill's own failure, with an error type for failure patterns."""

    def __init__(self, message: str, error_type: str = "agent_error"):
        super().__init__(message)
        self.error_type = error_type


@skill("demo.echo", payload={"message": Field(str), "fail": Field(bool)},
       description="Returns its payload; fails on request (for tests and demos)")
def echo(payload: dict) -> dict:
    if payload.get("fail"):
        raise SkillError("asked to fail", payload.get("error_type") or "agent_error")
    return {"echo": payload.get("message", ""), "host": socket.gethostname()}


@skill("demo.sleep", payload={"seconds": Field((int, float), required=True, min=0, max=3600)},
       description="Sleeps, then answers (long-running work for demos and lease tests)")
def sleep(payload: dict) -> dict:
    time.sleep(float(payload["seconds"]))
    return {"slept_s": payload["seconds"]}


@skill("gpu.probe", resource_class="gpu", vram_mb=256,
       description="Reads the GPUs this worker sees through NVML")
def gpu_probe(payload: dict) -> dict:
    from pulseguard_agent import gpu

    return {"gpus": gpu.gpu_inventory()}
