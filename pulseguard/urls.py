from django.contrib import admin
from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from apps.core import views as core_views

urlpatterns = [
    # /healthz, /readyz and /metrics are answered by apps.core.middleware.ProbeMiddleware.
    path("admin/", admin.site.urls),
    path("accounts/", include("django.contrib.auth.urls")),
    path("api/v1/", include("apps.agents.api.urls")),
    path("api/v1/", include("apps.metrics.api.urls")),
    path("api/v1/", include("apps.workflows.api.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    # Anything else under /api/ is a JSON 404, in debug mode too (agents parse errors).
    re_path(r"^api/", core_views.not_found),
    path("", include("apps.dashboard.urls")),
]

handler404 = "apps.core.views.not_found"
