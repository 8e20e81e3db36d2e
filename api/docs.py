"""The schema and Swagger UI, served from the product (no CDN, CSP 'self')."""

from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView


class SchemaView(SpectacularAPIView):
    """The OpenAPI 3 document; no key needed."""

    authentication_classes = []
    permission_classes = []
    throttle_classes = []


class DocsView(SpectacularSwaggerSplitView):
    """Swagger UI: its init script is a separate file, so no inline script."""

    authentication_classes = []
    permission_classes = []
    throttle_classes = []
    template_name = "api/swagger_ui.html"
    url_name = "api:schema"
