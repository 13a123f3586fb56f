from django.contrib import admin

from apps.metrics.models import ModelPrice
from apps.metrics.pricing import prices_forget


@admin.register(ModelPrice)
class ModelPriceAdmin(admin.ModelAdmin):
    list_display = ("model", "provider_or_any", "input_per_mtok", "output_per_mtok", "cached_input_per_mtok", "valid_from", "source")
    list_filter = ("provider",)
    search_fields = ("model", "provider")
    ordering = ("provider", "model", "-valid_from")

    @admin.display(description="provider", ordering="provider")
    def provider_or_any(self, obj):
        return obj.provider or "any"

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        prices_forget()  # this process at once; the others within pricing.PRICE_CACHE_S
