"""Settings for the test suite: the production settings with test seams.

DATABASE_URL and CELERY_BROKER_URL still come from the environment, so the
integration tests run against the real PostgreSQL and Redis when they are set.
"""

import os

os.environ.setdefault(
    "SECRET_KEY", "test-only-secret-key-not-for-production-use-0123456789"
)
os.environ.setdefault("SECURE_SSL_REDIRECT", "0")
os.environ.setdefault("SECURE_HSTS_SECONDS", "0")

from .settings import *  # noqa: F403
from .settings import CELERY_BROKER_URL

# Tests read English text unless they ask for Chinese (Accept-Language).
LANGUAGE_CODE = "en"
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
STORAGES["staticfiles"] = {  # noqa: F405
    "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"
}
# Unit tests run tasks in-process; the integration tests start a real worker
# and flip this back off for themselves.
INTEGRATION_BROKER_URL = CELERY_BROKER_URL
CELERY_TASK_ALWAYS_EAGER = True
CELERY_BROKER_URL = "memory://"
THROTTLE_ENABLED = True
# Each test sees the dependencies as they are now; tests/test_healthz.py turns
# the cache on where it is the subject.
HEALTHZ_CACHE_SECONDS = 0
CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# A real worker started by the integration tests (tests/integration/worker.py):
# the real broker and SMTP server, and the test database named by DATABASE_URL.
if os.environ.get("INTEGRATION_WORKER") == "1":
    CELERY_TASK_ALWAYS_EAGER = False
    CELERY_BROKER_URL = INTEGRATION_BROKER_URL
    EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    # Test hook: seconds to sleep before each execution step, so that a test
    # can kill the worker in the middle of a case.
    EXECUTION_STEP_DELAY = float(os.environ.get("EXECUTION_STEP_DELAY", "0"))
# The login lockout is off unless a test turns it on (tests/security): other
# tests log in many times from one address.
AXES_ENABLED = False
