"""Site-wide views: the merchant home page and the health check."""

import threading
import time
from http import HTTPStatus

from django.conf import settings
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET


@require_GET
def home(request: HttpRequest) -> HttpResponse:
    return render(request, "home.html")


def _database_status() -> str:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except Exception:  # any driver error means the database is not usable
        return "down"
    return "ok"


def _broker_status() -> str:
    # Imported here: config.celery configures Celery from settings at import.
    from config.celery import app

    if settings.CELERY_TASK_ALWAYS_EAGER:
        return "eager"
    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=5)
    except Exception:  # kombu raises a variety of transport errors
        return "down"
    return "ok"


class _HealthCache:
    """The last probe's result in this process, reused for a few seconds.

    Without it every request to /healthz/ opened a broker connection with a
    5 s timeout: during an outage a handful of requests tied up every worker.
    The lock makes concurrent requests wait for one probe instead of each
    starting their own.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.clear()

    def clear(self) -> None:
        self.body: dict[str, str] | None = None
        self.probed_at = 0.0

    def get(self) -> dict[str, str]:
        ttl = settings.HEALTHZ_CACHE_SECONDS
        with self.lock:
            fresh = time.monotonic() - self.probed_at < ttl
            if self.body is None or not fresh:
                self.body = {"database": _database_status(), "broker": _broker_status()}
                self.probed_at = time.monotonic()
            return dict(self.body)


health_cache = _HealthCache()


@never_cache
@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    """Report whether the database and the broker answer (503 if either is down).

    The result is reused for ``HEALTHZ_CACHE_SECONDS`` (see ``_HealthCache``).
    """
    body = health_cache.get()
    healthy = body["database"] == "ok" and body["broker"] in {"ok", "eager"}
    return JsonResponse(
        body, status=HTTPStatus.OK if healthy else HTTPStatus.SERVICE_UNAVAILABLE
    )
