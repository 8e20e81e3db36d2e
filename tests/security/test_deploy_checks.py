"""`check --deploy` refuses console e-mail and an unnamed X-Forwarded-Proto proxy.

The checks run in a real `manage.py check --deploy` with production settings
read from the environment, as CI and a deployer run it.
"""

import os
import secrets
import subprocess
import sys
from pathlib import Path

from django.test import RequestFactory

BASE_DIR = Path(__file__).resolve().parents[2]
SMTP = "smtp://127.0.0.1:2525"
CACHE = "redis://127.0.0.1:6379/14"


def check_deploy(*, fail_level: str = "ERROR", **env) -> subprocess.CompletedProcess:
    environment = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(
            ("DJANGO_", "SECURE_", "DEBUG", "CACHE_URL", "EMAIL_", "TRUST")
        )
    }
    environment.update(
        DJANGO_SETTINGS_MODULE="config.settings",
        DEBUG="0",
        SECRET_KEY=secrets.token_urlsafe(50),
        ALLOWED_HOSTS="unbinding.example.com",
        CACHE_URL=CACHE,
        **env,
    )
    return subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", fail_level],
        cwd=BASE_DIR,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_console_email_with_debug_off_is_an_error():
    # when: production settings without EMAIL_URL (console e-mail)
    result = check_deploy()

    # then: an error, so even the default fail level stops the deploy
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "config.E001" in output
    assert "ERRORS:" in output


def test_smtp_email_passes_the_email_check():
    # when
    result = check_deploy(fail_level="WARNING", EMAIL_URL=SMTP)

    # then
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "config.E001" not in output


def test_forwarded_proto_is_ignored_unless_configured(settings):
    # given: the default production setting (TRUST_X_FORWARDED_PROTO unset)
    assert settings.SECURE_PROXY_SSL_HEADER is None

    # when: a client claims https
    request = RequestFactory().get("/", HTTP_X_FORWARDED_PROTO="https")

    # then
    assert request.is_secure() is False


def test_forwarded_proto_trusted_without_a_named_proxy_warns():
    # when
    unnamed = check_deploy(
        fail_level="WARNING", EMAIL_URL=SMTP, TRUST_X_FORWARDED_PROTO="1"
    )
    named = check_deploy(
        fail_level="WARNING",
        EMAIL_URL=SMTP,
        TRUST_X_FORWARDED_PROTO="1",
        TRUSTED_PROXIES="10.0.0.2",
    )

    # then
    assert unnamed.returncode != 0
    assert "config.W002" in unnamed.stdout + unnamed.stderr
    assert named.returncode == 0, named.stdout + named.stderr


def test_forwarded_proto_is_believed_when_configured(settings):
    # given: TRUST_X_FORWARDED_PROTO=1 as the settings module maps it
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

    # when
    request = RequestFactory().get("/", HTTP_X_FORWARDED_PROTO="https")

    # then
    assert request.is_secure() is True
