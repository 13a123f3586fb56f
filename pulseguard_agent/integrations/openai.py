"""Record the calls an OpenAI client makes: `instrument(client, recorder)`.

Wraps `client.chat.completions.create` and `client.responses.create` (sync clients)
in place. Works with any object shaped like the `openai` SDK's client, including
OpenAI-compatible servers (vLLM, Azure): pass `provider=` to name them. Tokens come
from `usage.prompt_tokens`, `usage.completion_tokens` and
`usage.prompt_tokens_details.cached_tokens` (the Responses API's `input_tokens`,
`output_tokens`, `input_tokens_details.cached_tokens`).
"""

from __future__ import annotations

from typing import Any, TypeVar

from pulseguard_agent.integrations._common import Context, Recorder, count, field, wrap

T = TypeVar("T")


def instrument(client: T, recorder: Recorder | None = None, *, provider: str = "openai",
               context: Context = None) -> T:
    """Record every chat completion and response `client` makes; returns `client` itself.

    `recorder` is anything with `record_llm_call` (an AgentRunner, a TelemetryBuffer);
    None records to the process-wide buffer the running agent sends. `context` adds
    session_id / workflow_id / task_id: a dict, or a function called for each call
    (e.g. reading a contextvar). Raises TypeError if `client` has neither endpoint.
    """
    found = False
    completions = field(client, "chat", "completions")
    if callable(field(completions, "create")):
        completions.create = wrap(completions.create, recorder=recorder, provider=provider, operation="chat",
                                  usage=chat_usage, context=context)
        found = True
    responses = field(client, "responses")
    if callable(field(responses, "create")):
        responses.create = wrap(responses.create, recorder=recorder, provider=provider, operation="chat",
                                usage=responses_usage, context=context)
        found = True
    if not found:
        raise TypeError(f"{type(client).__name__} has neither chat.completions.create nor responses.create")
    return client


def chat_usage(response: Any) -> dict:
    """Token counts of a ChatCompletion."""
    usage = field(response, "usage")
    return {
        "tokens_in": count(field(usage, "prompt_tokens")),
        "tokens_out": count(field(usage, "completion_tokens")),
        "tokens_cached": count(field(usage, "prompt_tokens_details", "cached_tokens")),
    }


def responses_usage(response: Any) -> dict:
    """Token counts of a Responses API response."""
    usage = field(response, "usage")
    return {
        "tokens_in": count(field(usage, "input_tokens")),
        "tokens_out": count(field(usage, "output_tokens")),
        "tokens_cached": count(field(usage, "input_tokens_details", "cached_tokens")),
    }
