from django.apps import AppConfig


class MetricsConfig(AppConfig):
    name = "apps.metrics"
    label = "metrics"

    def ready(self):
        from django.db.models.signals import post_migrate

        from apps.metrics import partitions

        # Tables need today's partitions before the first sample arrives.
        post_migrate.connect(partitions.partitions_ensure_after_migrate, sender=self)
