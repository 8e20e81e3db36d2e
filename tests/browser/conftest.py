"""Fixtures for the browser tests: Debian's Chromium, a live server, a real SMTP server.

The tests drive the real app (CSP and security headers on, as in production)
served by pytest-django's ``live_server`` on a loopback port. E-mail goes over
SMTP to an aiosmtpd server the test starts, so the merchant reads the code
from the real message. Celery stays eager in-process; the transactional test
database commits for real, so ``on_commit`` callbacks run.

Without /usr/bin/chromium the tests are skipped locally, but fail when
REQUIRE_INTEGRATION=1 or CI=true.
"""

import email
import email.policy
import io
import os
import re
import socket
import tempfile
import threading
import time
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
# The README's screenshots are refreshed only when asked (UPDATE_SCREENSHOTS=1),
# so an ordinary test run leaves the working tree clean.
SCREENSHOTS = (
    Path(__file__).resolve().parents[2] / "docs" / "screenshots"
    if os.environ.get("UPDATE_SCREENSHOTS") == "1"
    else Path(tempfile.gettempdir()) / "unbinding-screenshots"
)
# Chromium's Accept-Language for each app language.
BROWSER_LOCALES = {"en": "en-US", "zh-hans": "zh-CN"}
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}


def _required() -> bool:
    return (
        os.environ.get("REQUIRE_INTEGRATION") == "1"
        or os.environ.get("CI", "").lower() == "true"
    )


def browser_missing() -> str:
    """Return why the browser tests cannot run here, or '' if they can."""
    if not CHROMIUM.exists():
        return f"{CHROMIUM} is absent (apt-get install chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Playwright for Python is not installed"
    return ""


def pytest_runtest_setup(item: pytest.Item) -> None:
    if not item.get_closest_marker("browser"):
        return
    reason = browser_missing()
    if reason:
        if _required():
            pytest.fail(f"browser test cannot run: {reason}", pytrace=False)
        pytest.skip(f"browser: {reason}")


# ------------------------------------------------------------------------------
# The live server
# ------------------------------------------------------------------------------
def _static_files_only(media_handler):
    # Django's live server also serves MEDIA_URL, which is None here on purpose
    # (documents are private) and breaks its handler; serve static files only.
    from django.contrib.staticfiles.handlers import StaticFilesHandler

    return StaticFilesHandler(media_handler.application)


@pytest.fixture(scope="session")
def live_server(request):
    """The real app on a free loopback port, serving its static files.

    Overrides pytest-django's fixture of the same name (its autouse helper
    still adds the host to ALLOWED_HOSTS and makes the test transactional).
    """
    from pytest_django.live_server_helper import LiveServer

    server = LiveServer("127.0.0.1:0", start=False)
    server.thread.static_handler = _static_files_only
    server.start()
    yield server
    server.stop()


# ------------------------------------------------------------------------------
# Chromium
# ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def chromium():
    """One headless Chromium per test module."""
    from playwright.sync_api import sync_playwright

    # Playwright's sync API keeps an asyncio loop on the main thread while it
    # runs, which trips Django's async-safety check on the ORM calls the test
    # (and the database setup) make; the ORM is used synchronously here.
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
            )
            yield browser
            browser.close()


class PageErrors:
    """Console errors and uncaught page errors (CSP violations included)."""

    def __init__(self):
        self.errors: list[str] = []

    def watch(self, page) -> None:
        page.on("console", self._on_console)
        page.on("pageerror", lambda exc: self.errors.append(f"pageerror: {exc}"))

    def _on_console(self, message) -> None:
        if message.type == "error":
            self.errors.append(f"console: {message.text} ({message.location})")

    def assert_none(self) -> None:
        assert not self.errors, "browser errors:\n" + "\n".join(self.errors)


@pytest.fixture
def page_errors():
    errors = PageErrors()
    yield errors
    errors.assert_none()


@pytest.fixture
def new_page(chromium, live_server, page_errors):
    """Open a page in a fresh context: ``new_page(lang="zh-hans", phone=False)``."""
    contexts = []

    def open_page(*, lang: str = "en", phone: bool = False):
        options = {
            "base_url": live_server.url,
            "locale": BROWSER_LOCALES[lang],
            "timezone_id": "Asia/Shanghai",
            "viewport": PHONE if phone else DESKTOP,
        }
        if phone:
            options.update(is_mobile=True, has_touch=True, device_scale_factor=2)
        context = chromium.new_context(**options)
        context.set_default_timeout(15_000)
        contexts.append(context)
        page = context.new_page()
        page_errors.watch(page)
        return page

    yield open_page
    for context in contexts:
        context.close()


# ------------------------------------------------------------------------------
# SMTP
# ------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Mailbox:
    """Messages received by the test's SMTP server, as ``email.message`` objects."""

    def __init__(self):
        self.messages: list = []
        self._lock = threading.Lock()

    async def handle_DATA(self, server, session, envelope):  # aiosmtpd hook name
        message = email.message_from_bytes(
            envelope.original_content or envelope.content, policy=email.policy.default
        )
        message["X-Envelope-To"] = ", ".join(envelope.rcpt_tos)
        with self._lock:
            self.messages.append(message)
        return "250 Message accepted for delivery"

    def to(self, address: str) -> list:
        with self._lock:
            return [m for m in self.messages if address in m["X-Envelope-To"]]

    def wait_for(self, address: str, *, count: int = 1, timeout: float = 10.0) -> list:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.to(address)
            if len(found) >= count:
                return found
            time.sleep(0.05)
        raise AssertionError(f"no e-mail to {address} within {timeout}s")


def text_body(message) -> str:
    return message.get_body(preferencelist=("plain",)).get_content()


CODE = re.compile(r"(?<![\w-])(\d{6})(?![\w-])")


def code_from(message) -> str:
    """The 6-digit code of a verification e-mail (never the reference's digits)."""
    found = CODE.search(text_body(message))
    assert found, f"no code in:\n{text_body(message)}"
    return found.group(1)


@pytest.fixture
def smtp_server(settings):
    """A real SMTP server on a free loopback port; the app sends to it."""
    from aiosmtpd.controller import Controller

    mailbox = Mailbox()
    port = _free_port()
    controller = Controller(mailbox, hostname="127.0.0.1", port=port)
    controller.start()
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST = "127.0.0.1"
    settings.EMAIL_PORT = port
    settings.EMAIL_USE_TLS = False
    settings.EMAIL_USE_SSL = False
    settings.EMAIL_HOST_USER = ""
    settings.EMAIL_HOST_PASSWORD = ""
    yield mailbox
    controller.stop()


# ------------------------------------------------------------------------------
# Screenshots
# ------------------------------------------------------------------------------
def save_screenshot(
    page, name: str, *, full_page: bool = True, max_height: int | None = None
) -> Path:
    """Save a screenshot to docs/screenshots/<name>.png, palette-reduced to stay small.

    ``max_height`` (CSS pixels) cuts a long page to its top part.
    """
    from PIL import Image

    raw = page.screenshot(full_page=full_page, animations="disabled")
    image = Image.open(io.BytesIO(raw)).convert("RGB")
    if max_height:
        scale = page.evaluate("window.devicePixelRatio")
        image = image.crop(
            (0, 0, image.width, min(image.height, int(max_height * scale)))
        )
    reduced = image.quantize(colors=128, method=Image.Quantize.FASTOCTREE)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    reduced.save(path, optimize=True)
    return path
