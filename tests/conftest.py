"""Shared fixtures and the integration-test gate.

Integration tests (``@pytest.mark.integration``) need the real PostgreSQL and
Redis named by DATABASE_URL and CELERY_BROKER_URL. Without them they are
skipped with a reason, and with REQUIRE_INTEGRATION=1 (as .ci/run sets) a skip
fails the run instead.
"""

import os

import pytest
from django.conf import settings

pytest_plugins = ["tests.fixtures"]


def integration_missing() -> str:
    """Return why integration tests cannot run here, or '' if they can."""
    engine = settings.DATABASES["default"]["ENGINE"]
    if "postgresql" not in engine:
        return "DATABASE_URL does not point at PostgreSQL"
    if not getattr(settings, "INTEGRATION_BROKER_URL", "").startswith("redis"):
        return "CELERY_BROKER_URL does not point at Redis"
    return ""


def _required() -> bool:
    return os.environ.get("REQUIRE_INTEGRATION") == "1"


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("integration"):
        reason = integration_missing()
        if reason:
            if _required():
                pytest.fail(f"integration test cannot run: {reason}", pytrace=False)
            pytest.skip(f"integration: {reason}")
    on_postgres = "postgresql" in settings.DATABASES["default"]["ENGINE"]
    if item.get_closest_marker("postgres") and not on_postgres:
        if _required():
            pytest.fail("needs PostgreSQL (DATABASE_URL)", pytrace=False)
        pytest.skip("needs PostgreSQL (set DATABASE_URL)")


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    skipped = terminalreporter.stats.get("skipped", [])
    gated = [
        r
        for r in skipped
        if "integration" in str(r.longrepr) or "PostgreSQL" in str(r.longrepr)
    ]
    if gated:
        terminalreporter.write_line(
            f"{len(gated)} integration test(s) SKIPPED: set DATABASE_URL and "
            "CELERY_BROKER_URL to run them against PostgreSQL and Redis.",
            yellow=True,
        )


@pytest.fixture(autouse=True)
def _private_media_root(settings, tmp_path):
    """Keep every test's stored documents in its own temporary directory."""
    root = tmp_path / "documents"
    root.mkdir()
    settings.MEDIA_ROOT = root
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(root), "base_url": None},
        },
    }
    return root


@pytest.fixture(autouse=True)
def _clear_cache():
    """Start every test with empty throttle counters."""
    from django.core.cache import cache

    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def media_root(_private_media_root):
    """The private document storage directory of this test."""
    return _private_media_root


@pytest.fixture(autouse=True)
def _default_language():
    """Start and end every test in the site's default language.

    Code under test may activate the merchant's language (e-mails, SMS) and a
    test client request activates the request's; neither may leak into the
    next test's strings.
    """
    from django.utils import translation

    translation.activate(settings.LANGUAGE_CODE)
    yield
    translation.activate(settings.LANGUAGE_CODE)
