"""Security headers, cookies and a CSP the pages actually work under."""

import os
import secrets
import subprocess
import sys
from html.parser import HTMLParser
from http import HTTPStatus
from pathlib import Path

import pytest
from django.conf import settings as django_settings

from cases.models import CaseState
from cases.tokens import token_for_salt
from tests import factories
from tests.security.helpers import login, make_staff

pytestmark = pytest.mark.django_db

BASE_DIR = Path(django_settings.BASE_DIR)
# Scripts a browser does not execute, so CSP lets them be.
DATA_SCRIPT_TYPES = {"application/json", "application/ld+json"}


class InlineCodeFinder(HTMLParser):
    """Collect what a strict CSP would block: inline scripts, styles, handlers."""

    def __init__(self):
        super().__init__()
        self.problems: list[str] = []
        self._script_open = False
        self._script_executable = False

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        for name, _value in attrs:
            if name.startswith("on"):
                self.problems.append(f"<{tag} {name}=…> event handler")
            if name == "style":
                self.problems.append(f"<{tag} style=…> attribute")
        if tag == "a" and (attributes.get("href") or "").startswith("javascript:"):
            self.problems.append("javascript: link")
        if tag == "style":
            self.problems.append("<style> element")
        if tag == "script":
            self._script_open = True
            self._script_executable = "src" not in attributes and (
                attributes.get("type") not in DATA_SCRIPT_TYPES
            )

    def handle_endtag(self, tag):
        if tag == "script":
            self._script_open = False

    def handle_data(self, data):
        if self._script_open and self._script_executable and data.strip():
            self.problems.append(f"inline <script>: {data.strip()[:60]}")


def inline_code(html: str) -> list[str]:
    finder = InlineCodeFinder()
    finder.feed(html)
    return finder.problems


def assert_security_headers(response) -> None:
    csp = response["Content-Security-Policy"]
    directives = dict(
        ([*part.strip().split(" ", 1), ""])[:2] for part in csp.split(";")
    )
    assert directives["default-src"] == "'self'"
    assert directives["script-src"] == "'self'"
    assert directives["style-src"] == "'self'"
    assert directives["object-src"] == "'none'"
    assert directives["frame-ancestors"] == "'none'"
    assert directives["base-uri"] == "'self'"
    assert directives["form-action"] == "'self'"
    assert "unsafe-inline" not in csp
    assert "unsafe-eval" not in csp
    assert response["X-Frame-Options"] == "DENY"
    assert response["Referrer-Policy"] == "same-origin"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Cross-Origin-Opener-Policy"] == "same-origin"


def case_url(state: str, suffix: str = "") -> str:
    case = factories.CaseFactory(state=state)
    return f"/requests/{token_for_salt(case.token_salt)}/{suffix}"


@pytest.fixture
def public_urls(db) -> list[str]:
    return [
        "/",
        "/terminals/status/",
        "/terminals/status/?merchant_id=898110000000001&serial_number=SN1",
        "/requests/new/",
        "/requests/track/",
        case_url(CaseState.PENDING_VERIFICATION, "verify/"),
        case_url(CaseState.SUBMITTED),
        case_url(CaseState.INFO_REQUESTED),
        case_url(CaseState.SUBMITTED, "withdraw/"),
        "/requests/" + secrets.token_urlsafe(24) + "/",  # the 404 page
    ]


def test_every_public_page_sends_the_headers_and_has_no_inline_code(
    client, public_urls
):
    for url in public_urls:
        # when
        response = client.get(url)

        # then
        assert response.status_code in (HTTPStatus.OK, HTTPStatus.NOT_FOUND), url
        assert_security_headers(response)
        assert inline_code(response.content.decode()) == [], url


def test_the_throttle_page_sends_the_headers(client, settings):
    # given
    settings.THROTTLE_RATES = {**settings.THROTTLE_RATES, "binding_status": "1/3600"}
    client.get("/terminals/status/")

    # when
    response = client.get("/terminals/status/")

    # then
    assert response.status_code == HTTPStatus.TOO_MANY_REQUESTS
    assert_security_headers(response)
    assert inline_code(response.content.decode()) == []


def admin_urls() -> list[str]:
    case = factories.CaseFactory(state=CaseState.SUBMITTED)
    document = factories.DocumentFactory(case=case)
    return [
        "/admin/",
        "/admin/cases/case/",
        f"/admin/cases/case/{case.pk}/change/",
        f"/admin/cases/case/{case.pk}/history/",
        f"/admin/cases/case/{case.pk}/transition/start_review/",
        "/admin/cases/document/",
        f"/admin/cases/document/{document.pk}/change/",
        "/admin/cases/caseevent/",
        "/admin/cases/notification/",
        "/admin/auth/user/",
        "/admin/auth/user/add/",
        "/admin/otp_totp/totpdevice/add/",
        "/admin/axes/accessattempt/",
    ]


def test_admin_pages_send_the_headers_and_run_no_inline_code(client):
    # given
    root = make_staff("root")
    root.is_superuser = True
    root.save()
    login_page = client.get("/admin/login/")
    client.force_login(root)

    for response in [login_page, *(client.get(url) for url in admin_urls())]:
        # then: only <script src> and JSON data blocks, which CSP allows
        assert response.status_code == HTTPStatus.OK, response.request["PATH_INFO"]
        assert_security_headers(response)
        assert inline_code(response.content.decode()) == [], response.request[
            "PATH_INFO"
        ]


def test_a_document_download_is_sandboxed(client, auditor):
    # given
    document = factories.DocumentFactory()
    client.force_login(auditor)

    # when
    response = client.get(f"/admin/cases/document/{document.pk}/download/")

    # then
    assert response.status_code == HTTPStatus.OK
    assert response["Content-Security-Policy"] == "default-src 'none'; sandbox"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Content-Disposition"].startswith("attachment")
    assert "no-store" in response["Cache-Control"]
    assert "private" in response["Cache-Control"]


def test_hsts_on_https(client, settings):
    # given: the production values (the test settings turn HSTS off)
    settings.SECURE_HSTS_SECONDS = 31536000

    # when
    response = client.get("/", secure=True)

    # then
    assert response["Strict-Transport-Security"] == (
        "max-age=31536000; includeSubDomains; preload"
    )


def test_plain_http_is_redirected_to_https_when_enabled(client, settings):
    # given
    settings.SECURE_SSL_REDIRECT = True

    # when
    response = client.get("/requests/new/")
    health = client.get("/healthz/")

    # then: the load balancer's health check stays on plain HTTP
    assert response.status_code == HTTPStatus.MOVED_PERMANENTLY
    assert response["Location"] == "https://testserver/requests/new/"
    assert health.status_code == HTTPStatus.OK


def test_cookies_are_secure_and_http_only(client):
    # given
    make_staff("alice")

    # when
    form = client.get("/admin/login/")
    response = login(client, "alice")
    language = client.post("/i18n/setlang/", {"language": "en", "next": "/"})

    # then
    session = response.cookies[django_settings.SESSION_COOKIE_NAME]
    csrf = form.cookies[django_settings.CSRF_COOKIE_NAME]
    lang = language.cookies[django_settings.LANGUAGE_COOKIE_NAME]
    for cookie in (session, csrf, lang):
        assert cookie["secure"] is True, cookie.key
        assert cookie["httponly"] is True, cookie.key
        assert cookie["samesite"] == "Lax", cookie.key


def test_templates_have_no_inline_code():
    # given: every page template (e-mail templates are not served)
    templates = [
        path
        for path in (BASE_DIR / "templates").rglob("*.html")
        if "emails" not in path.parts
    ]

    # then
    problems = {
        str(path.relative_to(BASE_DIR)): inline_code(path.read_text())
        for path in templates
    }
    assert templates
    assert {name: p for name, p in problems.items() if p} == {}


def _check_deploy(**env) -> subprocess.CompletedProcess:
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
        **env,
    )
    return subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=BASE_DIR,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_check_deploy_is_clean_with_production_settings():
    # when
    result = _check_deploy(
        CACHE_URL="redis://127.0.0.1:6379/14", EMAIL_URL="smtp://127.0.0.1:2525"
    )

    # then
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_check_deploy_warns_about_a_per_process_cache():
    # when: production without CACHE_URL
    result = _check_deploy(EMAIL_URL="smtp://127.0.0.1:2525")

    # then
    assert result.returncode != 0
    assert "config.W001" in result.stderr + result.stdout
