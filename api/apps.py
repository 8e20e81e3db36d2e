from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class ApiConfig(AppConfig):
    name = "api"
    verbose_name = _("API for the provider's systems")

    def ready(self) -> None:
        from api import (
            schema,  # noqa: F401  (registers the OpenAPI extension)
            signals,  # noqa: F401  (forgets cached keys on a change)
        )
