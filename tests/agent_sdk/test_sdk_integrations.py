"""The OpenAI and Anthropic wrappers, on small clients shaped like those SDKs (neither is installed).

The stand-ins copy the SDKs' shapes: `client.chat.completions.create(...)` returning a
ChatCompletion with `usage.prompt_tokens_details.cached_tokens`, `client.messages.create`
returning a Message with `usage.cache_read_input_tokens`, and exceptions named and
carrying `status_code` as the SDKs' do. The recorder is a real TelemetryBuffer.
"""

from types import SimpleNamespace

import pytest

from pulseguard_agent import TelemetryBuffer, default_buffer
from pulseguard_agent.integrations import anthropic as pg_anthropic
from pulseguard_agent.integrations import openai as pg_openai
from pulseguard_agent.integrations._common import error_type


class APIStatusError(Exception):
    def __init__(self, message: str, status_code: int):
        super().__init__(message)
        self.status_code = status_code


class RateLimitError(APIStatusError):
    pass


class BadRequestError(APIStatusError):
    pass


class InternalServerError(APIStatusError):
    pass


class AuthenticationError(APIStatusError):
    pass


class APIConnectionError(Exception):
    pass


class APITimeoutError(APIConnectionError):  # as in both SDKs: a timeout is a connection error
    pass


class Endpoint:
    """A resource with `create`: answers, or raises, what the test queued."""

    def __init__(self, *outcomes):
        self.outcomes = list(outcomes)
        self.calls = []

    def create(self, **kwargs):
        self.calls.append(kwargs)
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome


def chat_completion(prompt=1200, completion=310, cached=1024, model="gpt-4o-mini-2024-07-18"):
    usage = SimpleNamespace(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion,
                            prompt_tokens_details=SimpleNamespace(cached_tokens=cached, audio_tokens=0))
    return SimpleNamespace(id="chatcmpl-1", object="chat.completion", model=model, usage=usage,
                           choices=[SimpleNamespace(index=0, message=SimpleNamespace(role="assistant", content="hi"))])


def openai_client(*chat_outcomes, responses=()):
    return SimpleNamespace(chat=SimpleNamespace(completions=Endpoint(*chat_outcomes)), responses=Endpoint(*responses))


def anthropic_message(input_tokens=900, output_tokens=120, cache_read=2048, cache_write=0):
    usage = SimpleNamespace(input_tokens=input_tokens, output_tokens=output_tokens, cache_read_input_tokens=cache_read,
                            cache_creation_input_tokens=cache_write)
    return SimpleNamespace(id="msg_1", type="message", role="assistant", model="claude-sonnet-4-5-20250929",
                           content=[SimpleNamespace(type="text", text="hi")], usage=usage, stop_reason="end_turn")


def test_an_openai_chat_completion_is_returned_as_is_and_recorded():
    response = chat_completion()
    client = openai_client(response)
    buffer = TelemetryBuffer()

    assert pg_openai.instrument(client, buffer, context={"session_id": "conv-91"}) is client
    result = client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])

    assert result is response
    (call,) = buffer.take()
    assert {k: v for k, v in call.items() if k not in ("ts", "latency_ms")} == {
        "kind": "llm", "provider": "openai", "model": "gpt-4o-mini", "operation": "chat", "tokens_in": 1200,
        "tokens_out": 310, "tokens_cached": 1024, "status": "ok", "session_id": "conv-91",
    }
    assert 0 <= call["latency_ms"] < 5000


def test_the_responses_api_is_recorded_with_its_own_usage_names():
    usage = SimpleNamespace(input_tokens=5000, output_tokens=700, input_tokens_details=SimpleNamespace(cached_tokens=4096))
    response = SimpleNamespace(id="resp_1", model="gpt-4.1", usage=usage, output_text="done")
    client = openai_client(responses=[response])
    buffer = TelemetryBuffer()
    pg_openai.instrument(client, buffer, provider="azure-openai", context=lambda: {"workflow_id": "run-17", "task_id": 42})

    assert client.responses.create(model="gpt-4.1", input="hi") is response

    (call,) = buffer.take()
    assert (call["provider"], call["tokens_in"], call["tokens_out"], call["tokens_cached"]) == ("azure-openai", 5000, 700,
                                                                                                4096)
    assert (call["workflow_id"], call["task_id"]) == ("run-17", "42")


@pytest.mark.parametrize("exc, expected", [
    (RateLimitError("slow down", 429), "rate_limit"),
    (APITimeoutError("Request timed out."), "timeout"),
    (InternalServerError("boom", 500), "server_error"),
    (APIStatusError("overloaded", 529), "server_error"),
    (BadRequestError("context too long", 400), "invalid_request"),
    (AuthenticationError("bad key", 401), "auth"),
    (APIConnectionError("Connection error."), "connection"),
    (TimeoutError(), "timeout"),
    (KeyError("x"), "other"),
])
def test_a_failed_call_is_recorded_with_its_kind_of_error_and_the_exception_goes_on(exc, expected):
    client = openai_client(exc)
    buffer = TelemetryBuffer()
    pg_openai.instrument(client, buffer)

    with pytest.raises(type(exc)) as raised:
        client.chat.completions.create(model="gpt-4o", messages=[])

    assert raised.value is exc
    (call,) = buffer.take()
    assert (call["status"], call["error_type"], call["model"], call["tokens_out"]) == ("error", expected, "gpt-4o", 0)


def test_a_stream_is_returned_untouched_and_recorded_without_tokens():
    stream = iter(["chunk-1", "chunk-2"])
    client = openai_client(stream)
    buffer = TelemetryBuffer()
    pg_openai.instrument(client, buffer)

    assert client.chat.completions.create(model="gpt-4o", messages=[], stream=True) is stream

    (call,) = buffer.take()
    assert call["tokens_in"] == call["tokens_out"] == 0 and "ttft_ms" in call and "latency_ms" not in call


def test_instrumenting_twice_records_each_call_once():
    client = openai_client(chat_completion())
    buffer = TelemetryBuffer()

    pg_openai.instrument(client, buffer)
    pg_openai.instrument(client, buffer)
    client.chat.completions.create(model="gpt-4o", messages=[])

    assert len(buffer) == 1


def test_without_a_recorder_calls_go_to_the_process_wide_buffer():
    default_buffer().take()
    client = openai_client(chat_completion())
    pg_openai.instrument(client)

    client.chat.completions.create(model="gpt-4o", messages=[])

    assert [c["model"] for c in default_buffer().take()] == ["gpt-4o"]


def test_a_recorder_that_fails_never_breaks_the_call(caplog):
    class Broken:
        def record_llm_call(self, *args, **kwargs):
            raise RuntimeError("disk on fire")

    response = chat_completion()
    client = openai_client(response)
    pg_openai.instrument(client, Broken())

    assert client.chat.completions.create(model="gpt-4o", messages=[]) is response
    assert "Could not record an LLM call" in caplog.text


def test_a_response_without_usage_is_recorded_with_zero_tokens():
    client = openai_client(SimpleNamespace(model="local-llama", usage=None))
    buffer = TelemetryBuffer()
    pg_openai.instrument(client, buffer, provider="vllm")

    client.chat.completions.create(model="local-llama", messages=[])

    assert buffer.take()[0]["tokens_in"] == 0


def test_something_that_is_not_an_openai_client_is_refused():
    with pytest.raises(TypeError, match="chat.completions.create"):
        pg_openai.instrument(SimpleNamespace(), TelemetryBuffer())


def test_async_clients_are_refused():
    async def create(**kwargs):
        return None

    client = SimpleNamespace(chat=SimpleNamespace(completions=SimpleNamespace(create=create)))

    with pytest.raises(TypeError, match="synchronous"):
        pg_openai.instrument(client, TelemetryBuffer())
    assert client.chat.completions.create is create  # left as it was


def test_an_anthropic_message_counts_cached_prompt_tokens_in_tokens_in():
    response = anthropic_message(input_tokens=900, output_tokens=120, cache_read=2048, cache_write=512)
    client = SimpleNamespace(messages=Endpoint(response))
    buffer = TelemetryBuffer()
    pg_anthropic.instrument(client, buffer)

    result = client.messages.create(model="claude-sonnet-4-5", max_tokens=1024, messages=[])

    assert result is response
    (call,) = buffer.take()
    assert (call["provider"], call["model"]) == ("anthropic", "claude-sonnet-4-5")
    assert (call["tokens_in"], call["tokens_out"], call["tokens_cached"]) == (900 + 2048 + 512, 120, 2048)


def test_an_anthropic_overload_is_a_server_error_and_is_raised():
    class OverloadedError(APIStatusError):
        pass

    client = SimpleNamespace(messages=Endpoint(OverloadedError("Overloaded", 529)))
    buffer = TelemetryBuffer()
    pg_anthropic.instrument(client, buffer)

    with pytest.raises(OverloadedError):
        client.messages.create(model="claude-opus-4-5", max_tokens=10, messages=[])

    assert buffer.take()[0]["error_type"] == "server_error"


def test_errors_are_named_from_a_status_code_on_the_response_too():
    exc = Exception("HTTP error")
    exc.response = SimpleNamespace(status_code=503)

    assert error_type(exc) == "server_error"
