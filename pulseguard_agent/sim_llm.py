"""Believable LLM calls for simulated agents: the model they registered with, its speed, its failures.

Token counts follow the agent's role (a coder sends whole files, a support agent a
ticket), latency follows the model (time to first token, then tokens per second), a few
percent of calls fail in the ways providers fail, prompt caching hits within a session.
One seeded `random.Random` per agent: the same seed and the same states give the same
calls.
"""

from __future__ import annotations

import math
import random

from pulseguard_agent.samples import llm_call_sample
from pulseguard_agent.sim_fleet import SimProfile

# model -> (median time to first token in ms, output tokens per second)
MODEL_SPEED = {
    "gpt-4o": (450, 90), "gpt-4o-mini": (300, 130), "gpt-4.1": (500, 85),
    "claude-sonnet-4": (700, 70), "claude-opus-4": (1100, 40), "claude-3-5-haiku": (350, 120),
    "gemini-2.5-pro": (900, 85), "gemini-2.5-flash": (350, 180),
    "qwen2.5-coder-32b": (150, 60), "llama-3.1-70b": (220, 45), "qwen2.5-72b": (220, 42), "mixtral-8x22b": (180, 55),
}
EMBEDDING_PROVIDERS = ("tei",)
# role -> (prompt tokens low, high, output tokens low, high), drawn log-uniformly
ROLE_TOKENS = {
    "planner": (1500, 9000, 150, 1200), "coder": (3000, 32000, 200, 2500), "reviewer": (5000, 40000, 200, 1500),
    "qa": (1000, 7000, 300, 2500), "researcher": (2000, 24000, 150, 1000), "support": (400, 3000, 80, 500),
    "embedder": (64, 2048, 0, 0), "gpu-infer": (300, 8000, 100, 1500),
}
# calls per second while busy, by role (workers serve traffic, agents think between calls)
BUSY_RATE = {"embedder": 2.0, "gpu-infer": 1.5}
ERRORS = (("rate_limit", 0.35), ("server_error", 0.3), ("timeout", 0.2), ("invalid_request", 0.15))
CACHING_PROVIDERS = ("openai", "anthropic", "google", "vllm")


class FakeLLM:
    """LLM calls of one simulated agent; `calls(state, isolated, end_ts, seconds)` covers a window."""

    def __init__(self, profile: SimProfile, rng: random.Random):
        self.profile = profile
        self.rng = rng
        self.error_rate = 0.06 if profile.flaky else 0.025
        self._session = 0
        self._session_calls_left = 0
        self._new_session = True
        self._task = 0
        self._was_busy = False

    def calls(self, state: str, isolated: bool, end_ts: float, seconds: float) -> list[dict]:
        """Samples for the calls made in the `seconds` before `end_ts` (oldest first)."""
        busy = state == "busy" and not isolated
        if busy and not self._was_busy:
            self._task += 1
        self._was_busy = busy
        if isolated:
            rate = 0.0
        elif busy:
            rate = BUSY_RATE.get(self.profile.role.name, 0.3)
        else:
            rate = 0.08 if state == "draining" else 0.02
        n = min(_poisson(self.rng, rate * max(seconds, 0.0)), 500)
        offsets = sorted((self.rng.uniform(0, seconds) for _ in range(n)), reverse=True)
        return [self._call(end_ts - offset, busy) for offset in offsets]

    def task_call(self, ts: float, *, task_id: str, workflow_id: str | None = None,
                  error_type: str | None = None) -> dict:
        """One call made while working on a PulseGuard task, tagged with its id.

        Whether it fails is the caller's decision (`error_type`: rate_limit, timeout,
        server_error or invalid_request), so the calls agree with the task's outcome.
        """
        fields = {"task_id": task_id, **({"workflow_id": workflow_id} if workflow_id else {})}
        return self._call(ts, True, task_fields=fields, error_type=error_type)

    def _call(self, ts: float, busy: bool, *, task_fields: dict | None = None, error_type: str | None = None) -> dict:
        p, rng = self.profile, self.rng
        embedding = p.provider in EMBEDDING_PROVIDERS
        in_lo, in_hi, out_lo, out_hi = ROLE_TOKENS.get(p.role.name, (500, 5000, 100, 1000))
        tokens_in = int(math.exp(rng.uniform(math.log(in_lo), math.log(in_hi))))
        tokens_out = 0 if embedding else int(math.exp(rng.uniform(math.log(out_lo), math.log(out_hi))))
        fields: dict = {"operation": "embedding" if embedding else "chat", "session_id": self._session_id(),
                        "ts": round(ts, 3)}
        if task_fields is not None:
            fields.update(task_fields)
        elif busy and p.role.kind == "agent":
            fields.update(workflow_id=f"run-{p.index:03d}-{self._task // 3}", task_id=f"{p.index}-{self._task}")
        if error_type is not None or (task_fields is None and rng.random() < self.error_rate):
            return self._failed(tokens_in, fields, error_type)
        if embedding:
            latency = 12 + tokens_in * 0.015 * rng.lognormvariate(0, 0.3)
            return llm_call_sample(p.provider, p.model, tokens_in=tokens_in, latency_ms=round(latency, 1), **fields)
        ttft_median, tokens_per_s = MODEL_SPEED.get(p.model, (500, 60))
        # Time to first token grows with the prompt; generation with the answer.
        ttft = ttft_median * rng.lognormvariate(0, 0.35) * (1 + tokens_in / 60_000)
        latency = ttft + tokens_out / (tokens_per_s * rng.uniform(0.75, 1.15)) * 1000
        cached = 0
        # The first call of a session writes the cache; later ones read the shared prefix.
        if p.provider in CACHING_PROVIDERS and tokens_in >= 1024 and not self._new_session and rng.random() < 0.55:
            cached = int(tokens_in * rng.uniform(0.4, 0.92)) // 128 * 128
        streamed = rng.random() < 0.7
        return llm_call_sample(p.provider, p.model, tokens_in=tokens_in, tokens_out=tokens_out, tokens_cached=cached,
                               latency_ms=round(latency, 1), ttft_ms=round(ttft, 1) if streamed else None, **fields)

    def _failed(self, tokens_in: int, fields: dict, kind: str | None = None) -> dict:
        rng = self.rng
        kinds, weights = zip(*ERRORS)
        kind = kind or rng.choices(kinds, weights)[0]
        if kind == "timeout":  # the prompt went out; the client gave up waiting
            latency, sent = rng.choice((30_000.0, 60_000.0, 120_000.0)), tokens_in
        elif kind == "server_error":
            latency, sent = rng.uniform(200, 8000), 0
        else:
            latency, sent = rng.uniform(40, 400), 0
        return llm_call_sample(self.profile.provider, self.profile.model, tokens_in=sent, latency_ms=round(latency, 1),
                               status="error", error_type=kind, **fields)

    def _session_id(self) -> str:
        self._new_session = self._session_calls_left <= 0
        if self._new_session:
            self._session += 1
            self._session_calls_left = self.rng.randint(3, 25)
        self._session_calls_left -= 1
        return f"{self.profile.name}-s{self._session:04d}"


def _poisson(rng: random.Random, mean: float) -> int:
    """A Poisson draw (Knuth for small means, a rounded normal for large ones)."""
    if mean <= 0:
        return 0
    if mean > 30:
        return max(0, round(rng.gauss(mean, math.sqrt(mean))))
    limit, k, p = math.exp(-mean), 0, 1.0
    while True:
        p *= rng.random()
        if p <= limit:
            return k
        k += 1
