"""Real processes for the integration tests: Celery workers, an SMTP sink, Redis.

Nothing here runs in eager mode: a worker is ``celery -A config worker`` in
its own process group, talking to the pytest database, a Redis database
reserved for the tests and an aiosmtpd server on a loopback port.
"""

import email
import email.policy
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

from aiosmtpd.controller import Controller
from django.conf import settings
from django.db import connection

ROOT = Path(__file__).resolve().parents[2]
# The Redis database the integration tests use; flushed by every test.
TEST_REDIS_DB = int(os.environ.get("INTEGRATION_REDIS_DB", "15"))
# Ports for a throwaway redis-server a test can stop and start.
SPARE_REDIS_PORTS = range(6390, 6400)


def wait_for(
    predicate: Callable[[], object], *, timeout: float = 30, what: str = ""
) -> object:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.1)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def broker_url_for_tests(base: str) -> str:
    """``base`` (redis://host:port/N) with the tests' own database number."""
    parts = urlsplit(base)
    return urlunsplit(parts._replace(path=f"/{TEST_REDIS_DB}"))


def flush_redis(url: str) -> None:
    import redis

    redis.Redis.from_url(url).flushdb()


def database_url() -> str:
    """DATABASE_URL of the database pytest is using (the test database)."""
    s = connection.settings_dict
    auth = quote(s["USER"] or "")
    if s.get("PASSWORD"):
        auth += ":" + quote(s["PASSWORD"])
    host = s.get("HOST") or "127.0.0.1"
    port = s.get("PORT") or "5432"
    return f"postgres://{auth}@{host}:{port}/{s['NAME']}"


# --- the test process's Celery -------------------------------------------------


@contextmanager
def celery_broker(url: str) -> Iterator[None]:
    """Make this process publish to ``url`` instead of running tasks eagerly."""
    from kombu import pools

    from config.celery import app

    # app.conf reads Django settings live; what is set here goes into its
    # "changes" layer, which must be emptied again afterwards rather than
    # filled with the values seen now (a test may have changed the settings).
    keys = ("task_always_eager", "broker_url")
    saved = {key: app.conf.changes[key] for key in keys if key in app.conf.changes}

    def reset_pools() -> None:
        # Pools are cached per connection URL in kombu's registry: drop them all.
        pools.reset()
        app._pool = None
        app.amqp._producer_pool = None

    # Celery reads CELERY_BROKER_URL from the environment before its config.
    saved_env = os.environ.get("CELERY_BROKER_URL")
    reset_pools()
    os.environ["CELERY_BROKER_URL"] = url
    app.conf.task_always_eager = False
    app.conf.broker_url = url
    try:
        yield
    finally:
        reset_pools()
        for key in keys:
            app.conf.changes.pop(key, None)
        app.conf.changes.update(saved)
        if saved_env is None:
            os.environ.pop("CELERY_BROKER_URL", None)
        else:
            os.environ["CELERY_BROKER_URL"] = saved_env


# --- SMTP ---------------------------------------------------------------------


class SmtpSink:
    """An aiosmtpd server that keeps what it receives, or refuses it with 451."""

    def __init__(self) -> None:
        self.messages: list[email.message.EmailMessage] = []
        self.refusing = False
        self.refused = 0
        self._lock = threading.Lock()
        self.port = free_port()
        self.controller = Controller(self, hostname="127.0.0.1", port=self.port)

    async def handle_DATA(self, server, session, envelope) -> str:
        if self.refusing:
            with self._lock:
                self.refused += 1
            return "451 4.3.0 Mailbox busy, try again later"
        message = email.message_from_bytes(
            envelope.original_content or envelope.content, policy=email.policy.default
        )
        message["X-Envelope-To"] = ", ".join(envelope.rcpt_tos)
        with self._lock:
            self.messages.append(message)
        return "250 OK"

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}"

    def received(self) -> list[email.message.EmailMessage]:
        with self._lock:
            return list(self.messages)

    def start(self) -> None:
        self.controller.start()

    def stop(self) -> None:
        self.controller.stop()


# --- Celery workers -----------------------------------------------------------


class Worker:
    """``celery worker`` as a subprocess in its own process group."""

    def __init__(
        self, *, name: str, broker_url: str, smtp_url: str, log_dir: Path, **env
    ):
        self.name = name
        self.log_path = log_dir / f"worker-{name}.log"
        self.env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "config.settings_test",
            "INTEGRATION_WORKER": "1",
            "DATABASE_URL": database_url(),
            "CELERY_BROKER_URL": broker_url,
            "EMAIL_URL": smtp_url,
            "MEDIA_ROOT": str(settings.MEDIA_ROOT),
            "DEPARTMENT_EMAILS": ",".join(
                f"{k}={v}" for k, v in settings.DEPARTMENT_EMAILS.items()
            ),
            "NOTIFICATION_RETRY_BACKOFF_SECONDS": "1",
            "NOTIFICATION_RETRY_BACKOFF_MAX_SECONDS": "2",
            "EXECUTION_RETRY_BACKOFF_SECONDS": "1",
            "EXECUTION_RETRY_BACKOFF_MAX_SECONDS": "2",
            "LOG_LEVEL": "INFO",
            **{k: str(v) for k, v in env.items()},
        }
        self.process: subprocess.Popen | None = None

    def start(self, *, timeout: float = 30) -> "Worker":
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "config",
                "worker",
                "-Q",
                "default,execution,notifications",
                "--pool",
                "prefork",
                "-c",
                "1",
                "-n",
                f"{self.name}@%h",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
                "--loglevel",
                "INFO",
            ],
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        wait_for(
            lambda: self.process.poll() is not None or b" ready." in self.log(),
            timeout=timeout,
            what=f"worker {self.name} to be ready",
        )
        if self.process.poll() is not None:
            raise RuntimeError(f"worker {self.name} exited:\n{self.log().decode()}")
        return self

    def log(self) -> bytes:
        return self.log_path.read_bytes() if self.log_path.exists() else b""

    def kill(self) -> None:
        """SIGKILL the worker and its pool children at once, as a crash would."""
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        """Warm shutdown; SIGKILL whatever is left after 15 s."""
        if not self.process or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.kill()
        with suppress(ProcessLookupError):  # pool children left behind
            os.killpg(self.process.pid, signal.SIGKILL)


# --- a Redis the test can stop ---------------------------------------------------


class RedisServer:
    """A throwaway ``redis-server`` on a spare loopback port, no persistence."""

    def __init__(self, *, log_dir: Path):
        self.port = self._spare_port()
        self.log_dir = log_dir
        self.process: subprocess.Popen | None = None

    @staticmethod
    def _spare_port() -> int:
        for port in SPARE_REDIS_PORTS:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) != 0:
                    return port
        raise RuntimeError("no spare port for a test Redis in 6390-6399")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed")
        self.process = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.log_dir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )

        def up() -> bool:
            with socket.socket() as sock:
                return sock.connect_ex(("127.0.0.1", self.port)) == 0

        wait_for(up, timeout=10, what="redis-server to listen")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=10)
