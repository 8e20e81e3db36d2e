"""No tracking token in the web server's output, with either Procfile's command.

Each test starts the real web command of a Procfile (gunicorn with the
production settings; runserver as `make run` does) on a free loopback port
over its own SQLite database and a real SMTP sink, files a case through the
form, opens the verify and tracking pages, posts the track form, follows an
old ``?link=`` URL and sends a Referer holding the tracking URL, then greps
everything the server wrote for the token.
"""

import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from tests.faults.harness import pdf_bytes
from tests.integration.harness import SmtpSink, free_port

BASE_DIR = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent

pytestmark = pytest.mark.timeout(240)

SEED = """
import json
from tests import factories
merchant = factories.MerchantFactory(contact_email="contact@onfile.example.com")
terminals = [factories.BindingFactory(merchant=merchant).terminal for _ in range(2)]
print(json.dumps({
    "merchant_id": merchant.merchant_id, "uscc": merchant.uscc,
    "legal_rep_name": merchant.legal_rep_name,
    "serial_numbers": [t.serial_number for t in terminals],
}))
"""


def procfile_command(name: str, process: str) -> str:
    for line in (BASE_DIR / name).read_text().splitlines():
        if line.startswith(f"{process}:"):
            return line.split(":", 1)[1].strip()
    raise AssertionError(f"no {process} in {name}")


@pytest.fixture
def smtp():
    sink = SmtpSink()
    sink.start()
    yield sink
    sink.stop()


@pytest.fixture
def environment(tmp_path, smtp) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(
            (
                "DJANGO_",
                "SECURE_",
                "DEBUG",
                "DATABASE_URL",
                "CELERY_",
                "CACHE_URL",
                "EMAIL_",
                "TRUST",
                "SESSION_",
                "CSRF_",
            )
        )
    }
    env.update(
        DJANGO_SETTINGS_MODULE="config.settings",
        SECRET_KEY=secrets.token_urlsafe(50),
        ALLOWED_HOSTS="127.0.0.1",
        DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite3'}",
        EMAIL_URL=f"smtp://127.0.0.1:{smtp.port}",
        MEDIA_ROOT=str(tmp_path / "documents"),
        # Plain HTTP on loopback: no HTTPS redirect, cookies sent over http.
        SECURE_SSL_REDIRECT="0",
        SESSION_COOKIE_SECURE="0",
        CSRF_COOKIE_SECURE="0",
        PATH=f"{VENV_BIN}:{os.environ.get('PATH', '')}",
        PYTHONUNBUFFERED="1",
    )
    return env


def manage(env: dict[str, str], *args: str) -> str:
    result = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


class Server:
    """A Procfile's web command running in its own process group."""

    def __init__(self, command: str, env: dict[str, str], log: Path):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        # Loopback only, whatever the Procfile binds in production.
        command = command.replace("0.0.0.0:", "127.0.0.1:")
        self.log = log
        self._out = log.open("wb")
        self.process = subprocess.Popen(
            ["bash", "-c", f"exec {command}"],
            cwd=BASE_DIR,
            env={**env, "PORT": str(self.port)},
            stdout=self._out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            self._wait_until_up()
        except BaseException:
            self.stop()
            raise

    def _wait_until_up(self) -> None:
        deadline = time.monotonic() + 90
        while True:
            try:
                if requests.get(f"{self.base}/healthz/", timeout=5).ok:
                    return
            except requests.RequestException:
                pass
            assert self.process.poll() is None, self.output()
            assert time.monotonic() < deadline, self.output()
            time.sleep(0.3)

    def stop(self) -> str:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self._out.close()
        return self.output()

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def hidden(html: str, name: str) -> str:
    match = re.search(rf'name="{name}" value="([^"]*)"', html)
    assert match, f"no {name} in the form"
    return match.group(1)


def merchant_journey(
    base: str, registry: dict
) -> tuple[str, dict[str, requests.Response]]:
    """File a case and touch every URL a token travels in; return the token."""
    browser = requests.Session()
    seen: dict[str, requests.Response] = {}

    form = browser.get(f"{base}/requests/new/", timeout=10).text
    data = {
        "csrfmiddlewaretoken": hidden(form, "csrfmiddlewaretoken"),
        "merchant_id": registry["merchant_id"],
        "uscc": registry["uscc"],
        "legal_rep_name": registry["legal_rep_name"],
        "applicant_name": registry["legal_rep_name"],
        "applicant_is_legal_rep": "on",
        "applicant_phone": "13912345678",
        "applicant_email": "applicant@typed.example.com",
        "serial_numbers": "\n".join(registry["serial_numbers"]),
        "reason": "business_change",
        "declaration": "on",
    }
    if 'name="submission_key"' in form:
        data["submission_key"] = hidden(form, "submission_key")
    pdf = pdf_bytes()
    files = [
        ("business_licence", ("licence.pdf", pdf, "application/pdf")),
        ("legal_rep_id", ("id-front.pdf", pdf, "application/pdf")),
        ("legal_rep_id", ("id-back.pdf", pdf, "application/pdf")),
        ("device_evidence", ("device.pdf", pdf, "application/pdf")),
    ]
    filed = browser.post(
        f"{base}/requests/new/",
        data=data,
        files=files,
        headers={"Referer": f"{base}/requests/new/"},
        allow_redirects=False,
        timeout=30,
    )
    assert filed.status_code == 302, filed.text[:2000]
    token = filed.headers["Location"].split("/")[2]
    tracking_url = f"{base}/requests/{token}/"

    seen["verify"] = browser.get(f"{tracking_url}verify/", timeout=10)
    seen["detail"] = browser.get(tracking_url, timeout=10)
    # What a browser sends with the page's same-origin policy: the tracking
    # URL in the Referer of the page's own style sheet.
    browser.get(
        f"{base}/static/css/site.css", headers={"Referer": tracking_url}, timeout=10
    )
    track = browser.get(f"{base}/requests/track/", timeout=10)
    seen["track form"] = track
    seen["track"] = browser.post(
        f"{base}/requests/track/",
        data={
            "csrfmiddlewaretoken": hidden(track.text, "csrfmiddlewaretoken"),
            "link": tracking_url,
        },
        headers={"Referer": f"{base}/requests/track/"},
        allow_redirects=False,
        timeout=10,
    )
    # An old-style link, as it may still be bookmarked.
    browser.get(f"{base}/requests/track/?link={token}", timeout=10)
    # A token with one character changed: a 404 that Django logs.
    browser.get(f"{base}/requests/{token[:-1]}x/", timeout=10)
    return token, seen


def assert_no_token(output: str, token: str, responses: dict) -> None:
    assert responses["verify"].status_code == 200
    # The tracking URL is never sent to another site in a Referer.
    assert responses["verify"].headers["Referrer-Policy"] == "same-origin"
    assert responses["detail"].headers["Referrer-Policy"] == "same-origin"
    # The track form posts: no token in a URL query.
    assert 'method="post"' in responses["track form"].text.lower()
    assert responses["track"].status_code == 302
    assert responses["track"].headers["Location"].endswith(f"/requests/{token}/")
    # The output is not empty: the request lines are there, redacted.
    assert "/requests/[token]/verify/" in output, output[-3000:]
    assert token not in output, [line for line in output.splitlines() if token in line]
    assert token[:16] not in output


@pytest.fixture
def registry(environment) -> dict:
    manage(environment, "migrate", "--noinput")
    out = manage({**environment, "DEBUG": "1"}, "shell", "-c", SEED)
    return json.loads(out.strip().splitlines()[-1])


def test_the_production_web_command_logs_no_token(environment, registry, tmp_path):
    # given: Procfile's web command, DEBUG off, static files collected
    env = {**environment, "DEBUG": "0"}
    manage(env, "collectstatic", "--noinput", "--verbosity", "0")
    server = Server(procfile_command("Procfile", "web"), env, tmp_path / "web.log")

    # when
    try:
        token, responses = merchant_journey(server.base, registry)
    finally:
        output = server.stop()

    # then
    assert "gunicorn" in output.lower() or "Booting worker" in output
    assert_no_token(output, token, responses)


def test_the_development_web_command_logs_no_token(environment, registry, tmp_path):
    # given: Procfile.dev's web command as `make run` starts it (DEBUG on)
    env = {**environment, "DEBUG": "1"}
    server = Server(procfile_command("Procfile.dev", "web"), env, tmp_path / "dev.log")

    # when
    try:
        token, responses = merchant_journey(server.base, registry)
    finally:
        output = server.stop()

    # then
    assert_no_token(output, token, responses)
