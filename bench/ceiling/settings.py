"""Settings for the benchmarks: the product's settings with the ceiling's URLconf.

Everything else (middleware, upload handlers, storage, database) is the
product's own, read from the same environment variables.
"""

from config.settings import *  # noqa: F403
from config.settings import STORAGES

ROOT_URLCONF = "bench.ceiling.urls"

# The product's static storage (whitenoise's manifest) needs `collectstatic`,
# which currently fails on the vendored Bootstrap files (they name source maps
# that are not in the repository). Static files play no part in what is
# measured, so plain storage stands in for it.
STORAGES = {
    **STORAGES,
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
