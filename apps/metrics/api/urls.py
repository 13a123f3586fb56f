from django.urls import path

from apps.metrics.api import views

app_name = "metrics-api"

urlpatterns = [
    path("agents/<uuid:agent_id>/metrics", views.AgentMetricsApi.as_view(), name="ingest"),
    path("metrics/query", views.MetricsQueryApi.as_view(), name="query"),
    path("metrics/llm/usage", views.LlmUsageApi.as_view(), name="llm_usage"),
    path("metrics/catalog", views.MetricsCatalogApi.as_view(), name="catalog"),
]
