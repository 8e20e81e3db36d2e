"""Fixtures of the fault-injection and load tests.

The real worker, the tests' broker and the departments are the fixtures of
tests/integration; this adds the fault injectors of ``tests.faults.harness``.
"""

from collections.abc import Iterator

import pytest
from django.conf import settings as django_settings

from tests.faults.harness import (
    FaultsRedisServer,
    PgProxy,
    StoppableSmtpSink,
    TinyFilesystem,
)
from tests.integration.conftest import (  # noqa: F401 (fixtures)
    broker_url,
    departments,
    start_worker,
)


@pytest.fixture
def smtp() -> Iterator[StoppableSmtpSink]:
    """The integration SMTP sink, which a test can also shut down and restart."""
    sink = StoppableSmtpSink()
    sink.start()
    yield sink
    sink.stop()


@pytest.fixture
def own_redis(tmp_path) -> Iterator[FaultsRedisServer]:
    """A redis-server on its own port (6380-6389) that the test can stop."""
    server = FaultsRedisServer(log_dir=tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def pg_proxy(transactional_db) -> Iterator[PgProxy]:
    """A loopback proxy in front of the test database that can cut connections."""
    db = django_settings.DATABASES["default"]
    proxy = PgProxy(
        host=db.get("HOST") or "127.0.0.1", port=int(db.get("PORT") or 5432)
    )
    yield proxy
    proxy.close()


@pytest.fixture
def tiny_media_root(settings, tmp_path) -> Iterator[TinyFilesystem]:
    """A 2 MB tmpfs as the document storage; skipped where mount is not permitted."""
    filesystem = TinyFilesystem(tmp_path / "tiny-documents", size="2m")
    reason = filesystem.mount()
    if reason:
        pytest.skip(reason)
    settings.MEDIA_ROOT = filesystem.path
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(filesystem.path), "base_url": None},
        },
    }
    yield filesystem
    filesystem.unmount()
