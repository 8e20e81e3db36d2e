"""Fixtures of the integration tests: real broker, real SMTP, real workers."""

from collections.abc import Callable, Iterator

import pytest
from django.conf import settings as django_settings

from tests.integration.harness import (
    RedisServer,
    SmtpSink,
    Worker,
    broker_url_for_tests,
    celery_broker,
    flush_redis,
)

DEPARTMENTS = {"finance": "fin@example.com", "sales": "sales@example.com"}


@pytest.fixture
def departments(settings) -> dict[str, str]:
    settings.DEPARTMENT_EMAILS = dict(DEPARTMENTS)
    return DEPARTMENTS


@pytest.fixture
def broker_url(transactional_db) -> Iterator[str]:
    """The tests' own Redis database, empty, used by this process too."""
    url = broker_url_for_tests(django_settings.INTEGRATION_BROKER_URL)
    flush_redis(url)
    with celery_broker(url):
        yield url
    flush_redis(url)


@pytest.fixture
def smtp() -> Iterator[SmtpSink]:
    sink = SmtpSink()
    sink.start()
    yield sink
    sink.stop()


@pytest.fixture
def start_worker(
    transactional_db, departments, smtp, tmp_path, broker_url
) -> Iterator[Callable[..., Worker]]:
    """Start real workers; each is stopped before the database is flushed."""
    workers: list[Worker] = []

    def start(name: str = "w1", *, broker: str | None = None, **env) -> Worker:
        worker = Worker(
            name=name,
            broker_url=broker or broker_url,
            smtp_url=smtp.url,
            log_dir=tmp_path,
            **env,
        )
        workers.append(worker)
        return worker.start()

    yield start
    for worker in workers:
        # Nothing is left to finish: end them at once (the queue is flushed).
        worker.kill()


@pytest.fixture
def spare_redis(tmp_path) -> Iterator[RedisServer]:
    server = RedisServer(log_dir=tmp_path)
    server.start()
    yield server
    server.stop()
