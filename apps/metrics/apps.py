from django.apps import AppConfig


class MetricsConfig(AppConfig):
    name = "apps.metrics"
    label = "metrics"

    def ready(self):
        from django.db.models.signals import post_migrate

        from apps.metrics import partitions

        # Tables need today's partitions before the first sample arrives, and an empty
        # price table (a new install, a flushed test database) gets the public prices.
        post_migrate.connect(partitions.partitions_ensure_after_migrate, sender=self)
        post_migrate.connect(_seed_prices, sender=self)


def _seed_prices(sender, **kwargs):
    from apps.metrics.prices import prices_seed_if_empty

    prices_seed_if_empty()
