"""Optional wrappers that record LLM calls made with provider SDKs (openai, anthropic).

Neither SDK is a dependency: the wrappers work on any client object shaped like them
(duck typing), so importing this package never imports a provider SDK.

    from pulseguard_agent.integrations import openai as pg_openai
    client = pg_openai.instrument(OpenAI(), runner)   # or no recorder: the process-wide buffer
"""
