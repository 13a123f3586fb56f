"""The price table. Samples and rollups are plain SQL tables (see schema.py): they are
written by COPY and read by selectors, never through the ORM."""

from decimal import Decimal

from django.core.validators import MinValueValidator
from django.db import models

PER_MILLION = Decimal(1_000_000)


class ModelPrice(models.Model):
    """What one million tokens of a model cost from `valid_from` on.

    A call is priced with the row in force at its own time. `provider` may be blank: the
    price then applies to that model from any provider (open models served by vLLM,
    Ollama, ...), unless a row names the provider. A model name also matches its dated
    variants (gpt-4o matches gpt-4o-2024-08-06): the longest matching name wins.
    """

    provider = models.CharField(max_length=64, blank=True, help_text="Blank: any provider")
    model = models.CharField(max_length=128)
    input_per_mtok = models.DecimalField("input $/M tokens", max_digits=12, decimal_places=6, validators=[MinValueValidator(0)])
    output_per_mtok = models.DecimalField("output $/M tokens", max_digits=12, decimal_places=6, validators=[MinValueValidator(0)])
    cached_input_per_mtok = models.DecimalField(
        "cached input $/M tokens", max_digits=12, decimal_places=6, null=True, blank=True,
        validators=[MinValueValidator(0)], help_text="Empty: cached tokens cost the input price",
    )
    valid_from = models.DateTimeField()
    source = models.CharField(max_length=200, blank=True, help_text="Where the price comes from")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["provider", "model", "-valid_from"]
        constraints = [models.UniqueConstraint(fields=["provider", "model", "valid_from"], name="model_price_unique_from")]

    def __str__(self) -> str:
        return f"{self.provider or '*'}/{self.model} from {self.valid_from:%Y-%m-%d}"

    def cost_usd(self, *, tokens_in: int, tokens_out: int, tokens_cached: int) -> float:
        """tokens_in counts every prompt token, the cached ones included."""
        cached = min(tokens_cached, tokens_in)
        cached_price = self.cached_input_per_mtok if self.cached_input_per_mtok is not None else self.input_per_mtok
        total = (
            Decimal(tokens_in - cached) * self.input_per_mtok
            + Decimal(cached) * cached_price
            + Decimal(tokens_out) * self.output_per_mtok
        ) / PER_MILLION
        return float(total)
