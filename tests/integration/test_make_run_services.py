"""`make run` with services: a killed worker comes back, the site stays up.

Starts Procfile.dev under honcho, as `make run` does with DATABASE_URL and
CELERY_BROKER_URL set, against the real PostgreSQL (a database of its own)
and Redis; kills the Celery worker with SIGKILL and checks that the web
server still answers /healthz/ and a new worker process starts and is ready.
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
import requests
from django.conf import settings as django_settings

from tests.integration.harness import broker_url_for_tests, flush_redis, free_port

BASE_DIR = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


def _ppid(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def descendants(root: int) -> list[int]:
    pids = [int(p) for p in os.listdir("/proc") if p.isdigit()]
    parent = {pid: _ppid(pid) for pid in pids}
    found, frontier = [], [root]
    while frontier:
        current = frontier.pop()
        children = [pid for pid, pp in parent.items() if pp == current]
        found += children
        frontier += children
    return found


def worker_process(honcho: int) -> int | None:
    """The Celery worker's main process now running under honcho, if any."""
    tree = {pid: _cmdline(pid) for pid in descendants(honcho)}
    mains = [
        pid
        for pid, cmd in tree.items()
        if "python" in cmd.split(" ", 1)[0]
        and "bin/celery" in cmd
        and " worker " in cmd
        # not one of its pool processes, which repeat its command line
        and tree.get(_ppid(pid), "") != cmd
    ]
    return mains[0] if mains else None


def wait_until(predicate, *, timeout: float, what: str, output=lambda: ""):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out waiting for {what}\n{output()[-4000:]}\n{predicate()}"
            )
        time.sleep(0.5)


def health(base: str) -> dict | None:
    try:
        response = requests.get(f"{base}/healthz/", timeout=10)
    except requests.RequestException:
        return None
    return response.json() if response.ok else None


@pytest.fixture
def dev_database_url() -> str:
    """A PostgreSQL database of this test's own, migrated, dropped afterwards."""
    url = os.environ["DATABASE_URL"]
    parts = urlsplit(url)
    name = f"{parts.path.lstrip('/') or 'unbinding'}_make_run"
    admin = urlunsplit(parts._replace(path="/postgres"))
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    yield urlunsplit(parts._replace(path=f"/{name}"))
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_a_killed_worker_is_restarted_and_the_web_server_stays_up(
    dev_database_url, tmp_path
):
    # given: `make run` with services: Procfile.dev under honcho
    broker = broker_url_for_tests(django_settings.INTEGRATION_BROKER_URL)
    flush_redis(broker)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DJANGO_", "DEBUG", "CELERY_", "EMAIL_", "INTEGRATION"))
    }
    env.update(
        DEBUG="1",
        DJANGO_SETTINGS_MODULE="config.settings",
        DATABASE_URL=dev_database_url,
        CELERY_BROKER_URL=broker,
        MEDIA_ROOT=str(tmp_path / "documents"),
        PORT=str(port),
        PATH=f"{VENV_BIN}:{os.environ.get('PATH', '')}",
        PYTHONUNBUFFERED="1",
        SUPERVISE_MAX_DELAY="2",
    )
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
        cwd=BASE_DIR,
        env=env,
        check=True,
        timeout=240,
    )
    log = tmp_path / "honcho.log"
    out = log.open("wb")
    honcho = subprocess.Popen(
        [str(VENV_BIN / "honcho"), "start", "-f", "Procfile.dev"],
        cwd=BASE_DIR,
        env=env,
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )

    def output() -> str:
        return log.read_text(errors="replace")

    def ready_workers() -> int:
        return output().count(" ready.")

    try:
        wait_until(
            lambda: health(base), timeout=90, what="the web server", output=output
        )
        wait_until(
            lambda: ready_workers() >= 1, timeout=90, what="the worker", output=output
        )
        first_worker = worker_process(honcho.pid)
        assert first_worker is not None, output()

        # when: the worker is killed outright
        os.kill(first_worker, signal.SIGKILL)

        # then: a new worker process comes up under the same loop and is ready
        def replaced():
            current = worker_process(honcho.pid)
            return current is not None and current != first_worker and current

        second_worker = wait_until(
            replaced, timeout=60, what="a new worker process", output=output
        )
        wait_until(
            lambda: ready_workers() >= 2,
            timeout=90,
            what="the new worker",
            output=output,
        )
        # ... and the web server never went away
        assert honcho.poll() is None, output()
        assert health(base) == {"database": "ok", "broker": "ok"}, output()
        assert second_worker != first_worker
        assert "supervise: " in output()
        started = descendants(honcho.pid)
    finally:
        if honcho.poll() is None:
            os.killpg(honcho.pid, signal.SIGTERM)
            try:
                honcho.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(honcho.pid, signal.SIGKILL)
                honcho.wait()
        out.close()
        flush_redis(broker)

    # then: stopping honcho stopped everything, nothing restarted behind it
    def left() -> dict[int, str]:
        return {pid: _cmdline(pid) for pid in started if _cmdline(pid)}

    wait_until(lambda: not left(), timeout=20, what="every process to stop")
    assert left() == {}
