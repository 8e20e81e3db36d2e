"""/healthz/: JSON status of the database and the broker; 503 when one is down."""

import socket
import threading
import time
from http import HTTPStatus
from urllib.parse import urlsplit, urlunsplit

import pytest
from django.conf import settings as django_settings
from django.db import connection
from django.db.utils import load_backend
from django.urls import reverse

from config import views
from tests.integration.harness import celery_broker

URL = reverse("healthz")


@pytest.fixture
def unreachable_database():
    """A real connection of the same backend to a database that cannot be reached."""
    config = {**connection.settings_dict}
    if connection.vendor == "postgresql":
        config.update(HOST="127.0.0.1", PORT="1", NAME="unreachable")
        config["OPTIONS"] = {**config.get("OPTIONS", {}), "connect_timeout": 2}
    else:
        config["NAME"] = "/nonexistent-directory/unreachable.sqlite3"
    broken = load_backend(config["ENGINE"]).DatabaseWrapper(config, alias="broken")
    yield broken
    broken.close()


@pytest.mark.django_db
def test_healthy_in_tests_with_eager_tasks(client):
    # when
    response = client.get(URL)

    # then
    assert response.status_code == HTTPStatus.OK
    assert response.json() == {"database": "ok", "broker": "eager"}
    assert "no-cache" in response["Cache-Control"]


@pytest.mark.django_db
def test_database_down_answers_503(client, monkeypatch, unreachable_database):
    # given: the view talks to a database nobody listens for
    monkeypatch.setattr(views, "connection", unreachable_database)

    # when
    response = client.get(URL)

    # then
    assert response.status_code == HTTPStatus.SERVICE_UNAVAILABLE
    assert response.json() == {"database": "down", "broker": "eager"}


@pytest.mark.django_db
def test_healthz_is_not_redirected_to_https(client, settings):
    # given: production-like settings
    settings.SECURE_SSL_REDIRECT = True

    # when
    response = client.get(URL)

    # then
    assert response.status_code == HTTPStatus.OK


def _redis_url(db: int) -> str:
    parts = urlsplit(django_settings.INTEGRATION_BROKER_URL)
    return urlunsplit(parts._replace(path=f"/{db}"))


@pytest.mark.integration
@pytest.mark.django_db
def test_real_broker_up_and_down(client, settings):
    # given: a real Redis broker instead of eager tasks
    settings.CELERY_TASK_ALWAYS_EAGER = False

    # when
    with celery_broker(_redis_url(10)):
        up = client.get(URL)
    with celery_broker("redis://127.0.0.1:1/0"):
        down = client.get(URL)

    # then
    assert (up.status_code, up.json()) == (
        HTTPStatus.OK,
        {"database": "ok", "broker": "ok"},
    )
    assert (down.status_code, down.json()) == (
        HTTPStatus.SERVICE_UNAVAILABLE,
        {"database": "ok", "broker": "down"},
    )


class CountingListener:
    """A TCP port that accepts and at once closes connections, counting them.

    A broker URL pointing here is "down" (no Redis answers), and every
    connection attempt the health check makes is counted honestly.
    """

    def __init__(self):
        self.accepts = 0
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.running = True
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while self.running:
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepts += 1
            conn.close()

    def close(self):
        self.running = False
        self.thread.join()
        self.sock.close()


@pytest.fixture
def counting_listener():
    listener = CountingListener()
    yield listener
    listener.close()


@pytest.fixture
def health_cache(settings):
    settings.HEALTHZ_CACHE_SECONDS = 1
    views.health_cache.clear()
    yield views.health_cache
    views.health_cache.clear()


@pytest.mark.django_db
def test_a_burst_during_a_broker_outage_costs_one_probe_per_window(
    client, settings, health_cache, counting_listener
):
    # given: the broker is down (nothing speaks Redis on that port)
    settings.CELERY_TASK_ALWAYS_EAGER = False
    url = f"redis://127.0.0.1:{counting_listener.port}/0"

    # when: a burst of checks in one window, then one after the window
    with celery_broker(url):
        first = client.get(URL)
        after_first = counting_listener.accepts
        burst = [client.get(URL) for _ in range(10)]
        after_burst = counting_listener.accepts
        time.sleep(1.1)
        later = client.get(URL)
        after_window = counting_listener.accepts

    # then: every answer is 503, the burst opened no connection, the next
    # window probed again
    answers = [first, *burst, later]
    assert {r.status_code for r in answers} == {HTTPStatus.SERVICE_UNAVAILABLE}
    assert {r.json()["broker"] for r in answers} == {"down"}
    assert after_first >= 1
    assert after_burst == after_first
    assert after_window > after_burst
