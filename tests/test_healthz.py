"""/healthz/: JSON status of the database and the broker; 503 when one is down."""

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
