"""Record the calls an Anthropic client makes: `instrument(client, recorder)`.

Wraps `client.messages.create` (sync clients) in place; works with any object shaped
like the `anthropic` SDK's client. Anthropic counts cached prompt tokens apart from
`input_tokens`; PulseGuard's `tokens_in` counts every prompt token (as OpenAI's does),
so it is input_tokens + cache_read_input_tokens + cache_creation_input_tokens, and
`tokens_cached` is cache_read_input_tokens.
"""

from __future__ import annotations

from typing import Any, TypeVar

from pulseguard_agent.integrations._common import Context, Recorder, count, field, wrap

T = TypeVar("T")


def instrument(client: T, recorder: Recorder | None = None, *, provider: str = "anthropic",
               context: Context = None) -> T:
    """Record every `client.messages.create` call; returns `client` itself.

    `recorder` and `context` as in `pulseguard_agent.integrations.openai.instrument`.
    Raises TypeError if `client` has no messages.create.
    """
    messages = field(client, "messages")
    if not callable(field(messages, "create")):
        raise TypeError(f"{type(client).__name__} has no messages.create")
    messages.create = wrap(messages.create, recorder=recorder, provider=provider, operation="chat",
                           usage=messages_usage, context=context)
    return client


def messages_usage(response: Any) -> dict:
    """Token counts of a Message."""
    usage = field(response, "usage")
    cache_read = count(field(usage, "cache_read_input_tokens"))
    cache_write = count(field(usage, "cache_creation_input_tokens"))
    return {
        "tokens_in": count(field(usage, "input_tokens")) + cache_read + cache_write,
        "tokens_out": count(field(usage, "output_tokens")),
        "tokens_cached": cache_read,
    }
