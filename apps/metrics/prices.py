"""Public list prices (USD per million tokens) seeded into ModelPrice by a migration.

Checked against the providers' pricing pages in 2026; edit them in the admin (add a row
with a later `valid_from` when a price changes, so old calls keep their old price).
Open-weight models have no list price of their own: the figures are typical hosted
prices (Together AI, Mistral's API) and apply to any provider unless a row says otherwise;
set them to your own cost per token for self-hosted serving.
"""

# provider, model, input, output, cached input (None: same as input), source
SEED = [
    ("openai", "gpt-5", "1.25", "10.00", "0.125", "openai.com/api/pricing"),
    ("openai", "gpt-5-mini", "0.25", "2.00", "0.025", "openai.com/api/pricing"),
    ("openai", "gpt-5-nano", "0.05", "0.40", "0.005", "openai.com/api/pricing"),
    ("openai", "gpt-4.1", "2.00", "8.00", "0.50", "openai.com/api/pricing"),
    ("openai", "gpt-4.1-mini", "0.40", "1.60", "0.10", "openai.com/api/pricing"),
    ("openai", "gpt-4.1-nano", "0.10", "0.40", "0.025", "openai.com/api/pricing"),
    ("openai", "gpt-4o", "2.50", "10.00", "1.25", "openai.com/api/pricing"),
    ("openai", "gpt-4o-mini", "0.15", "0.60", "0.075", "openai.com/api/pricing"),
    ("openai", "o3", "2.00", "8.00", "0.50", "openai.com/api/pricing"),
    ("openai", "o3-mini", "1.10", "4.40", "0.55", "openai.com/api/pricing"),
    ("openai", "o4-mini", "1.10", "4.40", "0.275", "openai.com/api/pricing"),
    ("openai", "text-embedding-3-small", "0.02", "0", None, "openai.com/api/pricing"),
    ("openai", "text-embedding-3-large", "0.13", "0", None, "openai.com/api/pricing"),
    ("anthropic", "claude-opus-4-5", "5.00", "25.00", "0.50", "anthropic.com/pricing"),
    ("anthropic", "claude-opus-4-1", "15.00", "75.00", "1.50", "anthropic.com/pricing"),
    ("anthropic", "claude-opus-4", "15.00", "75.00", "1.50", "anthropic.com/pricing"),
    ("anthropic", "claude-sonnet-4-5", "3.00", "15.00", "0.30", "anthropic.com/pricing"),
    ("anthropic", "claude-sonnet-4", "3.00", "15.00", "0.30", "anthropic.com/pricing"),
    ("anthropic", "claude-haiku-4-5", "1.00", "5.00", "0.10", "anthropic.com/pricing"),
    ("anthropic", "claude-3-5-haiku", "0.80", "4.00", "0.08", "anthropic.com/pricing"),
    ("mistral", "mistral-large-latest", "2.00", "6.00", None, "mistral.ai/pricing"),
    ("mistral", "mistral-small-latest", "0.10", "0.30", None, "mistral.ai/pricing"),
    ("", "llama-3.1-8b-instruct", "0.18", "0.18", None, "together.ai/pricing (hosted)"),
    ("", "llama-3.1-70b-instruct", "0.88", "0.88", None, "together.ai/pricing (hosted)"),
    ("", "llama-3.3-70b-instruct", "0.88", "0.88", None, "together.ai/pricing (hosted)"),
    ("", "qwen2.5-72b-instruct", "1.20", "1.20", None, "together.ai/pricing (hosted)"),
    ("", "deepseek-v3", "1.25", "1.25", None, "together.ai/pricing (hosted)"),
    ("", "gpt-oss-120b", "0.15", "0.60", None, "together.ai/pricing (hosted)"),
]


def prices_seed_if_empty() -> int:
    """Seed the price table when it is empty (a new install, or a test database flushed).

    Runs after every migrate; it never touches a table that has any row, so prices an
    operator edited or added are never overwritten.
    """
    from datetime import datetime, timezone
    from decimal import Decimal

    from apps.metrics.models import ModelPrice

    if ModelPrice.objects.exists():
        return 0
    since = datetime(2025, 1, 1, tzinfo=timezone.utc)
    ModelPrice.objects.bulk_create([
        ModelPrice(provider=provider, model=model, input_per_mtok=Decimal(i), output_per_mtok=Decimal(o),
                   cached_input_per_mtok=Decimal(c) if c is not None else None, valid_from=since, source=source)
        for provider, model, i, o, c, source in SEED
    ])
    return len(SEED)
