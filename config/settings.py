"""Settings for the POS unbinding back office, read from the environment.

Every variable has a safe local default: SQLite, tasks run in-process,
e-mail printed to the console. See README.md for the full list.
"""

import ipaddress
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import environ
from celery.schedules import crontab
from django.utils.translation import gettext_lazy as _
from kombu import Queue

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
if env.bool("DJANGO_READ_DOT_ENV_FILE", default=False):
    environ.Env.read_env(str(BASE_DIR / ".env"))

# ------------------------------------------------------------------------------
# Core
# ------------------------------------------------------------------------------
DEBUG = env.bool("DEBUG", default=False)
if DEBUG:
    SECRET_KEY = env("SECRET_KEY", default="insecure-local-development-key-only")
else:
    # Refuse to start without a real key in production.
    SECRET_KEY = env("SECRET_KEY")

ALLOWED_HOSTS = env.list(
    "ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"] if DEBUG else []
)
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

# Reverse proxies (addresses or CIDR networks, comma-separated) whose
# X-Forwarded-For is believed for the client address (config.client_address).
# Empty: trust none, the client is REMOTE_ADDR and the header is ignored.
TRUSTED_PROXIES = env.list("TRUSTED_PROXIES", default=[])
for _proxy in TRUSTED_PROXIES:
    ipaddress.ip_network(_proxy, strict=False)  # a typo fails at start-up

INSTALLED_APPS = [
    # django.contrib.admin with the staff login (verification code, lockout).
    "config.admin_site.StaffAdminConfig",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "crispy_forms",
    "crispy_bootstrap5",
    "django_fsm",
    "axes",
    "django_otp",
    "django_otp.plugins.otp_totp",
    "terminals",
    "cases",
    "rest_framework",
    "rest_framework_api_key",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "api",
    "webhooks",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "csp.middleware.CSPMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    # Before CSRF, whose check would read an oversized body first.
    "cases.uploads.UploadLimitMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django_otp.middleware.OTPMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last, so that it sees the outcome of the login view (lockout page).
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.template.context_processors.i18n",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# ------------------------------------------------------------------------------
# Database: SQLite unless DATABASE_URL says otherwise
# https://django-environ.readthedocs.io/en/latest/types.html#environ-env-db-url
# ------------------------------------------------------------------------------
DATABASES = {
    "default": env.db("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}")
}
DATABASES["default"]["ATOMIC_REQUESTS"] = False
# 0: a connection per request (behind PgBouncer, or the simplest set-up).
# Without a pooler, CONN_MAX_AGE=60 keeps each process's connection: a filing
# then costs PostgreSQL 5 ms of CPU instead of 15 (a new backend per request
# spends about 10 ms starting; docs/benchmarks.md, issue 15 filing). The
# health check makes a kept connection that died (database restarted) be
# replaced at the next request instead of failing it.
DATABASES["default"]["CONN_MAX_AGE"] = env.int("CONN_MAX_AGE", default=0)
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL and a busy timeout let the dev server and an in-process task share
    # the file without "database is locked".
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {"timeout": 20, "transaction_mode": "IMMEDIATE"}
    )
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# ------------------------------------------------------------------------------
# Cache (throttling counters). Use Redis in production so limits hold across
# processes: CACHE_URL=redis://127.0.0.1:6379/1
# ------------------------------------------------------------------------------
CACHES = {"default": env.cache("CACHE_URL", default="locmemcache://")}

# ------------------------------------------------------------------------------
# Passwords and authentication
# ------------------------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {
        "NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"
    },
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "admin:login"
AUTHENTICATION_BACKENDS = [
    # First: refuses a locked-out username + address before the password check.
    "axes.backends.AxesStandaloneBackend",
    # Permissions only: a staff user's groups and permissions in one query
    # (config/permissions.py); ModelBackend then answers from its caches.
    "config.permissions.OneQueryPermissionBackend",
    "django.contrib.auth.backends.ModelBackend",
]
# Staff login lockout (django-axes): this many failures of one username from
# one address lock that pair out for AXES_COOLOFF_MINUTES. A wrong
# verification code counts as a failure too. Unlock early with
# `manage.py axes_reset_username <name>`.
AXES_ENABLED = env.bool("AXES_ENABLED", default=True)
AXES_FAILURE_LIMIT = env.int("AXES_FAILURE_LIMIT", default=5)
AXES_COOLOFF_TIME = timedelta(minutes=env.int("AXES_COOLOFF_MINUTES", default=30))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_TEMPLATE = "axes/lockout.html"
AXES_LOCKOUT_CALLABLE = "config.security.lockout_response"
AXES_CLIENT_IP_CALLABLE = "config.client_address.client_address"
# Two-factor for staff (django-otp, TOTP). Anyone with a confirmed device
# enters its code at login; with STAFF_OTP_REQUIRED=1 members of these groups
# cannot sign in without one. Off by default so the demo logins work.
STAFF_OTP_REQUIRED = env.bool("STAFF_OTP_REQUIRED", default=False)
STAFF_OTP_REQUIRED_GROUPS = env.list(
    "STAFF_OTP_REQUIRED_GROUPS", default=["Approver", "Operations"]
)
OTP_TOTP_ISSUER = env("OTP_TOTP_ISSUER", default="POS Unbinding")

# ------------------------------------------------------------------------------
# Internationalisation: English and Simplified Chinese, China Standard Time
# ------------------------------------------------------------------------------
LANGUAGE_CODE = "zh-hans"
LANGUAGES = [("zh-hans", _("Simplified Chinese")), ("en", _("English"))]
LOCALE_PATHS = [BASE_DIR / "locale"]
TIME_ZONE = env("TIME_ZONE", default="Asia/Shanghai")
USE_I18N = True
USE_TZ = True

# ------------------------------------------------------------------------------
# Static files and private document storage
# ------------------------------------------------------------------------------
STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]
# Merchant documents live here. No URL pattern serves this directory: files
# are only handed out by the permission-checked staff download view.
MEDIA_ROOT = Path(env("MEDIA_ROOT", default=str(BASE_DIR / "var" / "documents")))
MEDIA_URL = None
STORAGES = {
    "default": {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": str(MEDIA_ROOT), "base_url": None},
    },
    "staticfiles": {
        "BACKEND": (
            "django.contrib.staticfiles.storage.StaticFilesStorage"
            if DEBUG
            else "whitenoise.storage.CompressedManifestStaticFilesStorage"
        )
    },
}
FILE_UPLOAD_PERMISSIONS = 0o600
FILE_UPLOAD_DIRECTORY_PERMISSIONS = 0o700
# Uploads larger than this are streamed to a temporary file, never held whole.
FILE_UPLOAD_MAX_MEMORY_SIZE = 256 * 1024
FILE_UPLOAD_HANDLERS = [
    # Stops reading at the request and per-file limits below.
    "cases.uploads.RequestSizeLimitUploadHandler",
    "django.core.files.uploadhandler.MemoryFileUploadHandler",
    "django.core.files.uploadhandler.TemporaryFileUploadHandler",
]
DATA_UPLOAD_MAX_MEMORY_SIZE = 2 * 1024 * 1024

# Limits on merchant uploads (bytes).
UPLOAD_MAX_FILE_SIZE = env.int("UPLOAD_MAX_FILE_SIZE", default=10 * 1024 * 1024)
UPLOAD_MAX_REQUEST_SIZE = env.int("UPLOAD_MAX_REQUEST_SIZE", default=40 * 1024 * 1024)
UPLOAD_MAX_IMAGE_PIXELS = env.int("UPLOAD_MAX_IMAGE_PIXELS", default=40_000_000)

# ------------------------------------------------------------------------------
# E-mail: console unless EMAIL_URL is set (e.g. smtp://127.0.0.1:2525)
# ------------------------------------------------------------------------------
vars().update(env.email_url("EMAIL_URL", default="consolemail://"))
EMAIL_TIMEOUT = env.int("EMAIL_TIMEOUT", default=10)
DEFAULT_FROM_EMAIL = env(
    "DEFAULT_FROM_EMAIL", default="POS Unbinding <noreply@example.com>"
)
SERVER_EMAIL = DEFAULT_FROM_EMAIL
# Departments told when a case completes: finance=fin@example.com,sales=...
DEPARTMENT_EMAILS = env.dict("DEPARTMENT_EMAILS", default={})
SITE_URL = env("SITE_URL", default="http://127.0.0.1:8000")

# ------------------------------------------------------------------------------
# Case rules (durations are configurable for operations)
# ------------------------------------------------------------------------------
CASE_VERIFICATION_CODE_TTL = timedelta(
    minutes=env.int("CASE_VERIFICATION_CODE_TTL_MINUTES", default=15)
)
CASE_VERIFICATION_MAX_ATTEMPTS = env.int("CASE_VERIFICATION_MAX_ATTEMPTS", default=5)
# Wrong codes per merchant per local day, across resends and new filings (a
# case's own counter restarts with each new code). Counted in the database.
VERIFICATION_MAX_FAILURES_PER_MERCHANT_PER_DAY = env.int(
    "VERIFICATION_MAX_FAILURES_PER_MERCHANT_PER_DAY", default=10
)
CASE_VERIFICATION_RESEND_INTERVAL = timedelta(
    seconds=env.int("CASE_VERIFICATION_RESEND_SECONDS", default=60)
)
# The merchant page (/merchant/): sign-in code validity, wrong codes allowed
# per code, and how long a signed-in merchant may stay idle.
MERCHANT_SIGN_IN_CODE_TTL = timedelta(
    minutes=env.int("MERCHANT_SIGN_IN_CODE_TTL_MINUTES", default=10)
)
MERCHANT_SIGN_IN_MAX_ATTEMPTS = env.int("MERCHANT_SIGN_IN_MAX_ATTEMPTS", default=5)
MERCHANT_SESSION_IDLE = timedelta(
    minutes=env.int("MERCHANT_SESSION_IDLE_MINUTES", default=15)
)
# However active, a merchant signs in again after this long.
MERCHANT_SESSION_MAX_AGE = timedelta(
    hours=env.int("MERCHANT_SESSION_MAX_AGE_HOURS", default=8)
)
CASE_PENDING_VERIFICATION_EXPIRY = timedelta(
    hours=env.int("CASE_PENDING_VERIFICATION_EXPIRY_HOURS", default=48)
)
CASE_REVIEW_DUE = timedelta(days=env.int("CASE_REVIEW_DUE_DAYS", default=3))
CASE_INFO_REMINDER_AFTER = timedelta(days=env.int("CASE_INFO_REMINDER_DAYS", default=3))
CASE_INFO_WITHDRAW_AFTER = timedelta(
    days=env.int("CASE_INFO_WITHDRAW_DAYS", default=14)
)
# Devices coming back after an unbinding: due back this many days after the
# unbinding; an overdue device's merchant is reminded once per reminder period;
# the address the merchant sends the devices to.
DEVICE_RETURN_DUE_DAYS = env.int("DEVICE_RETURN_DUE_DAYS", default=14)
DEVICE_RETURN_REMINDER_DAYS = env.int("DEVICE_RETURN_REMINDER_DAYS", default=7)
RETURN_ADDRESS = env(
    "RETURN_ADDRESS",
    default="POS Returns, 1 Example Road, Chaoyang District, Beijing 100020",
)
CASE_DOCUMENT_RETENTION = timedelta(
    days=env.int("CASE_DOCUMENT_RETENTION_DAYS", default=180)
)
# The transaction history exports and the audit trail are kept at least this
# many years (the system check cases.E101 refuses less than 5); a legal hold
# (cases.LegalHold) stops every purge while it is active.
RECORDS_RETENTION_YEARS = env.int("RECORDS_RETENTION_YEARS", default=5)
# Document previews: PDF pages rendered to PNG by a worker, within these limits.
PREVIEW_MAX_PAGES = env.int("PREVIEW_MAX_PAGES", default=10)
PREVIEW_MAX_PIXELS = env.int("PREVIEW_MAX_PIXELS", default=2_000_000)
PREVIEW_WIDTH = env.int("PREVIEW_WIDTH", default=900)
OUTBOX_SWEEP_AFTER = timedelta(
    seconds=env.int("OUTBOX_SWEEP_AFTER_SECONDS", default=120)
)
# Execution: temporary errors (database connection, lock timeout) are retried
# with exponential backoff and full jitter (base, cap in seconds) this many
# times; then the case fails at its step and Operations is e-mailed.
EXECUTION_MAX_RETRIES = env.int("EXECUTION_MAX_RETRIES", default=8)
EXECUTION_RETRY_BACKOFF = env.int("EXECUTION_RETRY_BACKOFF_SECONDS", default=2)
EXECUTION_RETRY_BACKOFF_MAX = env.int(
    "EXECUTION_RETRY_BACKOFF_MAX_SECONDS", default=300
)
# Chains: the unbind step sends a case's terminals to the core this many at a
# time, each batch committed with its terminals' progress (one idempotency key
# per batch), so a crash or a refusal redoes one batch, not the chain.
EXECUTION_BATCH_SIZE = env.int("EXECUTION_BATCH_SIZE", default=100)
# E-mail: SMTP errors are retried the same way, then the notice is marked failed.
NOTIFICATION_MAX_RETRIES = env.int("NOTIFICATION_MAX_RETRIES", default=12)
NOTIFICATION_RETRY_BACKOFF = env.int("NOTIFICATION_RETRY_BACKOFF_SECONDS", default=5)
NOTIFICATION_RETRY_BACKOFF_MAX = env.int(
    "NOTIFICATION_RETRY_BACKOFF_MAX_SECONDS", default=600
)

# Throttles for public endpoints: "<count>/<seconds>" per client address.
THROTTLE_RATES = {
    "binding_status": env("THROTTLE_BINDING_STATUS", default="20/60"),
    "request_new": env("THROTTLE_REQUEST_NEW", default="10/60"),
    "verify": env("THROTTLE_VERIFY", default="20/60"),
    "resend": env("THROTTLE_RESEND", default="5/600"),
    "tracking": env("THROTTLE_TRACKING", default="60/60"),
    "merchant_sign_in": env("THROTTLE_MERCHANT_SIGN_IN", default="5/600"),
    "merchant_code": env("THROTTLE_MERCHANT_CODE", default="20/600"),
}
THROTTLE_ENABLED = env.bool("THROTTLE_ENABLED", default=True)
# /healthz/ reuses its probe result this long (per process), so a burst of
# checks during a broker outage costs one 5 s probe per window, not one each.
HEALTHZ_CACHE_SECONDS = env.float("HEALTHZ_CACHE_SECONDS", default=5.0)

# ------------------------------------------------------------------------------
# Celery: eager (in-process) unless CELERY_BROKER_URL is set
# https://docs.celeryq.dev/en/stable/userguide/configuration.html
# ------------------------------------------------------------------------------
CELERY_BROKER_URL = env("CELERY_BROKER_URL", default="")
CELERY_TASK_ALWAYS_EAGER = not CELERY_BROKER_URL
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SOFT_TIME_LIMIT = 120
CELERY_TASK_TIME_LIMIT = 180
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# On a lost broker connection, unacknowledged (acks_late) tasks go back to the
# queue instead of finishing unacknowledged; the steps make a rerun harmless.
CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS = True
CELERY_BROKER_TRANSPORT_OPTIONS = {
    # A task whose worker vanished is redelivered after this many seconds.
    "visibility_timeout": env.int("CELERY_VISIBILITY_TIMEOUT", default=3600),
    # Fail fast when Redis is down: the outbox sweeper re-queues later.
    "max_retries": 2,
    "interval_start": 0,
    "interval_step": 0.5,
    "interval_max": 1,
}
CELERY_TASK_PUBLISH_RETRY = True
CELERY_TASK_PUBLISH_RETRY_POLICY = {
    "max_retries": 2,
    "interval_start": 0,
    "interval_step": 0.5,
    "interval_max": 1,
}
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_TASK_QUEUES = (Queue("default"), Queue("execution"), Queue("notifications"))
CELERY_TASK_ROUTES = {
    "cases.tasks.case_execute_task": {"queue": "execution"},
    "cases.tasks.notification_send_task": {"queue": "notifications"},
    "cases.tasks.notifications_send_batch_task": {"queue": "notifications"},
}
CELERY_BEAT_SCHEDULE = {
    "sweep-outbox": {"task": "cases.tasks.outbox_sweep_task", "schedule": 60.0},
    "expire-unverified": {
        "task": "cases.tasks.cases_expire_unverified_task",
        "schedule": 600.0,
    },
    "info-requested-follow-up": {
        "task": "cases.tasks.info_requests_follow_up_task",
        "schedule": 3600.0,
    },
    "overdue-digest": {
        "task": "cases.tasks.overdue_digest_send_task",
        "schedule": crontab(hour=9, minute=0),
    },
    "device-return-reminders": {
        "task": "cases.tasks.device_returns_remind_task",
        "schedule": crontab(hour=10, minute=0),
    },
    "purge-documents": {
        "task": "cases.tasks.documents_purge_expired_task",
        "schedule": crontab(hour=3, minute=30),
    },
}

# ------------------------------------------------------------------------------
# Forms
# ------------------------------------------------------------------------------
CRISPY_ALLOWED_TEMPLATE_PACKS = "bootstrap5"
CRISPY_TEMPLATE_PACK = "bootstrap5"

# ------------------------------------------------------------------------------
# Security
# ------------------------------------------------------------------------------
# Believe X-Forwarded-Proto only when a TLS proxy is known to set it (and strip
# it from clients); otherwise any client could claim to be on HTTPS.
TRUST_X_FORWARDED_PROTO = env.bool("TRUST_X_FORWARDED_PROTO", default=False)
SECURE_PROXY_SSL_HEADER = (
    ("HTTP_X_FORWARDED_PROTO", "https") if TRUST_X_FORWARDED_PROTO else None
)
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=not DEBUG)
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=0 if DEBUG else 31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = not DEBUG
SECURE_HSTS_PRELOAD = not DEBUG
SECURE_REDIRECT_EXEMPT = [r"^healthz/$"]
SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", default=not DEBUG)
CSRF_COOKIE_SECURE = env.bool("CSRF_COOKIE_SECURE", default=not DEBUG)
# No script reads the CSRF cookie (forms carry the token), so hide it from JS.
CSRF_COOKIE_HTTPONLY = True
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_AGE = 8 * 3600
LANGUAGE_COOKIE_SECURE = SESSION_COOKIE_SECURE
LANGUAGE_COOKIE_HTTPONLY = True
LANGUAGE_COOKIE_SAMESITE = "Lax"
SECURE_CONTENT_TYPE_NOSNIFF = True
# same-origin, not no-referrer: the tracking URL (token) never leaves the site
# in a Referer, and the Referer this server receives is redacted in its logs.
# no-referrer would make browsers send "Origin: null" with the token pages'
# forms, which Django's CSRF check refuses.
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'", "data:"],
        "font-src": ["'self'", "data:"],
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    }
}

# ------------------------------------------------------------------------------
# Logging: to stderr; never log personal data (see terminals.masking)
# ------------------------------------------------------------------------------
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}
    },
    "filters": {"redact_tokens": {"()": "config.logging.RedactTrackingTokens"}},
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "plain",
            "filters": ["redact_tokens"],
        }
    },
    "root": {"handlers": ["console"], "level": env("LOG_LEVEL", default="INFO")},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        # Django's defaults give these their own handlers, without the token
        # filter: runserver's request lines (django.server) and, in DEBUG,
        # "Not Found: /requests/<token>/" (django). Route them through ours.
        "django": {"handlers": ["console"], "level": "INFO", "propagate": False},
        "django.server": {
            "handlers": ["console"],
            "level": "INFO",
            "propagate": False,
        },
    },
}

# ------------------------------------------------------------------------------
# The provider's core / TMS (cases.connectors). "local" (the default) keeps
# the product on its own registry; "http" calls CORE_URL for every execution
# step (README, "Plugging in the provider's core").
# ------------------------------------------------------------------------------
CORE_CONNECTOR = env("CORE_CONNECTOR", default="local")
CORE_URL = env("CORE_URL", default="")
CORE_API_KEY = env("CORE_API_KEY", default="")
# Shared secret of the core's callbacks to /api/core/callback/ (HMAC-SHA256);
# callbacks are refused while it is empty.
CORE_CALLBACK_SECRET = env("CORE_CALLBACK_SECRET", default="")
CORE_CALLBACK_MAX_SKEW = env.int("CORE_CALLBACK_MAX_SKEW_SECONDS", default=300)
CORE_CONNECT_TIMEOUT = env.float("CORE_CONNECT_TIMEOUT_SECONDS", default=3.0)
CORE_READ_TIMEOUT = env.float("CORE_READ_TIMEOUT_SECONDS", default=15.0)
# Retries of one call (timeouts, 5xx, 429), same idempotency key, after
# CORE_RETRY_BACKOFF_SECONDS doubling; then the task's own backoff takes over.
CORE_RETRIES = env.int("CORE_RETRIES", default=2)
CORE_RETRY_BACKOFF = env.float("CORE_RETRY_BACKOFF_SECONDS", default=0.5)
# The circuit opens after this many consecutive failures, for this long.
CORE_BREAKER_THRESHOLD = env.int("CORE_BREAKER_THRESHOLD", default=5)
CORE_BREAKER_RESET_SECONDS = env.float("CORE_BREAKER_RESET_SECONDS", default=60.0)

# ------------------------------------------------------------------------------
# SMS (cases.sms): which channels the merchant's notices use, and the gateway.
# NOTIFICATION_CHANNELS=email,sms adds an SMS to the mobile number on file for
# the code, receipt, information request, rejection, completion and the
# reminder to send back unbound devices.
# SMS_BACKEND: "console" (logs, masked number) or "aliyun" (an HTTP gateway
# with Aliyun's SendSms request shape), or a dotted path.
# ------------------------------------------------------------------------------
NOTIFICATION_CHANNELS = env.list("NOTIFICATION_CHANNELS", default=["email"])
SMS_BACKEND = env("SMS_BACKEND", default="console")
SMS_URL = env("SMS_URL", default="https://dysmsapi.aliyuncs.com/")
SMS_ACCESS_KEY_ID = env("SMS_ACCESS_KEY_ID", default="")
SMS_ACCESS_KEY_SECRET = env("SMS_ACCESS_KEY_SECRET", default="")
SMS_SIGN_NAME = env("SMS_SIGN_NAME", default="")
# Template code per notice kind, as registered with the provider, e.g.
# verification_code=SMS_1001,receipt=SMS_1002,completed=SMS_1005
SMS_TEMPLATES = env.dict("SMS_TEMPLATES", default={})
SMS_TIMEOUT = env.float("SMS_TIMEOUT_SECONDS", default=10.0)
# API for the provider's own systems (docs/api.md) and its webhooks
# https://www.django-rest-framework.org/api-guide/settings/
# ------------------------------------------------------------------------------
# A valid API key is looked up at most once this long per process: a
# revocation or change made in another process takes effect within it (in
# the same process at once). 0 looks the key up on every request.
API_KEY_CACHE_SECONDS = env.float("API_KEY_CACHE_SECONDS", default=5.0)
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["api.auth.APIKeyAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["api.auth.HasScope"],
    "DEFAULT_THROTTLE_CLASSES": ["api.auth.APIKeyRateThrottle"],
    "DEFAULT_THROTTLE_RATES": {
        # Per API key, whatever address it calls from.
        "api_key": env("THROTTLE_API_KEY", default="600/min"),
    },
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": [
        "rest_framework.parsers.JSONParser",
        "rest_framework.parsers.MultiPartParser",
        "rest_framework.parsers.FormParser",
    ],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "api.problems.problem_exception_handler",
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "POS unbinding API",
    "DESCRIPTION": "Cases, binding checks and staff actions for the provider's own systems. See docs/api.md.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SCHEMA_PATH_PREFIX": r"/api/v[0-9]+",
    # Swagger UI from the product's own static files (no CDN; CSP stays 'self').
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # Several resources have a "state": each choice set gets its own name.
    "ENUM_NAME_OVERRIDES": {
        "CaseStateEnum": "cases.models.CaseState",
        "DeviceReturnStateEnum": "cases.models.DeviceReturnState",
        "FinanceItemStateEnum": "cases.models.FinanceItem.State",
    },
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "api.schema.add_links",
    ],
}
# Webhooks: a failed delivery is retried with exponential backoff and full
# jitter (base, cap in seconds) until this long after the event, then failed.
WEBHOOK_TIMEOUT_SECONDS = env.int("WEBHOOK_TIMEOUT_SECONDS", default=10)
WEBHOOK_RETRY_BASE_SECONDS = env.int("WEBHOOK_RETRY_BASE_SECONDS", default=20)
WEBHOOK_RETRY_MAX_SECONDS = env.int("WEBHOOK_RETRY_MAX_SECONDS", default=3600)
WEBHOOK_RETRY_FOR = timedelta(hours=env.int("WEBHOOK_RETRY_FOR_HOURS", default=24))
# After a secret rotation the old secret also signs for this long.
WEBHOOK_SECRET_OVERLAP = timedelta(
    hours=env.int("WEBHOOK_SECRET_OVERLAP_HOURS", default=24)
)
CELERY_BEAT_SCHEDULE["webhooks-sweep"] = {
    "task": "webhooks.tasks.webhook_sweep_task",
    "schedule": 15.0,
}

# ------------------------------------------------------------------------------
# Money after unbinding: the final statement and finance work items
# (cases/statements.py, cases/services/finance.py; README "Money")
# ------------------------------------------------------------------------------
# Part of the funds paid to the merchant held back against chargebacks, and
# for how long (the acquirer keeps chargeback rights about 12 months).
CHARGEBACK_RESERVE_RATE = Decimal(env("CHARGEBACK_RESERVE_RATE", default="0.10"))
CHARGEBACK_RESERVE_DAYS = env.int("CHARGEBACK_RESERVE_DAYS", default=180)
# Finance items above this amount (CNY) need a second finance user to confirm.
FINANCE_DUAL_CONTROL_ABOVE = Decimal(
    env("FINANCE_DUAL_CONTROL_ABOVE", default="1000.00")
)
# A refund still open this many days after it became due is overdue.
FINANCE_REFUND_OVERDUE_DAYS = env.int("FINANCE_REFUND_OVERDUE_DAYS", default=14)
# A deposit refund whose condition is the device's return waits for it
# (finance_items_release_for_terminal, called when the device is received).
DEPOSIT_REFUND_WAITS_FOR_DEVICE = env.bool(
    "DEPOSIT_REFUND_WAITS_FOR_DEVICE", default=True
)
