"""Benchmark intake throughput: the real request form against the Django ceiling.

Usage::

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/unbinding_bench_intake \\
        .venv/bin/python bench/intake.py [--duration 30] [--concurrency 4]

Creates and migrates the database if needed, empties the case and registry
tables, builds a registry in which every merchant has one bound terminal (a
terminal can have only one open case, so every filing uses a fresh merchant)
and three valid PDFs of about 200 KB. Then, for gunicorn with 2 sync workers
and again with 2 gthread workers of 4 threads (DEBUG off, PostgreSQL, tasks
queued to a Redis broker with no worker, as the web process of production
does -- ``BENCH_BROKER_URL``, default ``redis://127.0.0.1:6379/8``, a Redis
database of its own: it is emptied before and after; ``--eager`` runs them in
the request instead -- e-mail to a dummy backend, throttling off, documents
in a temporary MEDIA_ROOT), a load generator on loopback runs ``--concurrency`` clients for
``--duration`` seconds each against:

- **the product**: GET ``/requests/new/`` (CSRF cookie and token, the form's
  submission key) then POST the real multipart form with the three PDFs; a
  success is a 302 to ``/requests/<token>/verify/``, and afterwards every
  token must open a case row;
- **the ceiling**: GET ``/ceiling/upload/`` (CSRF token) then POST the same
  multipart body to a minimal view that saves the three files with
  ``default_storage.save`` and inserts one row (``bench/ceiling/``).

Both are served by the same gunicorn process with the same settings
(``bench.ceiling.settings``: the product's settings plus the ceiling URL).
The gunicorn workers' CPU per filing is read from ``/proc`` around each row.
Finally the product's and the ceiling's CPU per filing are measured in process
(this process's CPU and that of the PostgreSQL server process behind its
connection, see ``measure``) and the product is profiled with pyinstrument
(if installed). Writes the ``intake`` section of
docs/benchmarks.md.
"""

import argparse
import http.client
import io
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
# Importable once ROOT is on sys.path (the script runs as bench/<name>.py).
from bench.report import database_create_if_missing  # noqa: E402

GOAL = 0.7
WEB_CPU_GOAL_MS = 30
PG_CPU_GOAL_MS = 10
PDF_SIZE = 200 * 1024
CONFIGS = (
    ("sync, 2 workers", ["--workers", "2", "--worker-class", "sync"]),
    (
        "gthread, 2 workers × 4 threads",
        ["--workers", "2", "--worker-class", "gthread", "--threads", "4"],
    ),
)
VERIFY_RE = re.compile(r"^/requests/([A-Za-z0-9_-]+)/verify/$")
CEILING_RE = re.compile(r"^/ceiling/upload/(\d+)/$")
HIDDEN_RE = r'name="{name}" value="([^"]+)"'


# Tasks are queued to a Redis broker, as in production (the previews of the
# documents and the verification e-mail are a worker's work, not the web
# request's); no worker runs, and the queue is emptied after the run.
# ``BENCH_BROKER_URL`` names another Redis database; ``--eager`` runs the
# tasks in the request instead, as the figures before 2026-12-01 did.
BROKER_URL = os.environ.get("BENCH_BROKER_URL", "redis://127.0.0.1:6379/8")


def environment(media_root: str, *, broker_url: str = BROKER_URL) -> dict[str, str]:
    """The server's environment: production settings, loopback, a Redis broker."""
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "bench.ceiling.settings",
        "DEBUG": "0",
        "SECRET_KEY": os.environ.get(
            "SECRET_KEY", "benchmark-only-key-not-secret-0123456789"
        ),
        "ALLOWED_HOSTS": "127.0.0.1,testserver",
        "SECURE_SSL_REDIRECT": "0",
        # Plain HTTP on loopback: the cookies must come back.
        "SESSION_COOKIE_SECURE": "0",
        "CSRF_COOKIE_SECURE": "0",
        "THROTTLE_ENABLED": "0",
        "EMAIL_URL": "dummymail://",
        "MEDIA_ROOT": media_root,
        "CELERY_BROKER_URL": broker_url,
        "LOG_LEVEL": "WARNING",
    }
    return env


# --- data ---------------------------------------------------------------------------


def pdf_bytes(seed: int, size: int = PDF_SIZE) -> bytes:
    """A valid one-page PDF of about ``size`` bytes: a scanned page (noise JPEG)."""
    import random

    from PIL import Image

    rng = random.Random(seed)
    side = 200
    while True:
        noise = bytes(rng.getrandbits(8) for _ in range(side * side * 3))
        image = Image.frombytes("RGB", (side, side), noise)
        buffer = io.BytesIO()
        image.save(buffer, "PDF", resolution=150.0, quality=85)
        data = buffer.getvalue()
        if len(data) >= size * 0.95:
            return data
        side = int(side * (size / len(data)) ** 0.5) + 8


@dataclass
class Merchant:
    merchant_id: str
    uscc: str
    legal_rep_name: str
    serial_number: str


def seed_registry(count: int) -> list[Merchant]:
    """Empty the tables and create ``count`` merchants, each with a bound terminal."""
    from django.db import connection
    from django.utils import timezone

    from bench.ceiling.views import CREATE_TABLE, TABLE
    from terminals import identifiers
    from terminals.models import Binding, Terminal
    from terminals.models import Merchant as MerchantModel

    with connection.cursor() as cursor:
        cursor.execute(
            "TRUNCATE cases_caseevent, cases_document, cases_caseterminal, "
            "cases_notification, cases_executionstep, cases_case, "
            "terminals_transaction, terminals_binding, terminals_settlementbatch, "
            "terminals_terminal, terminals_merchant, django_session "
            "RESTART IDENTITY CASCADE"
        )
        cursor.execute(CREATE_TABLE)
        cursor.execute(f"TRUNCATE {TABLE} RESTART IDENTITY")
    now = timezone.now()
    merchants = MerchantModel.objects.bulk_create(
        [
            MerchantModel(
                merchant_id=identifiers.make_merchant_id(n),
                uscc=identifiers.make_uscc(n),
                name=f"基准测试商贸有限公司{n}",
                legal_rep_name="王芳",
                legal_rep_id_number=identifiers.make_resident_id(n),
                contact_email=f"merchant{n}@bench.example.com",
                contact_phone=f"138{n % 100_000_000:08d}",
            )
            for n in range(1, count + 1)
        ],
        batch_size=2000,
    )
    terminals = Terminal.objects.bulk_create(
        [
            Terminal(
                serial_number=identifiers.make_serial_number(n),
                terminal_id=identifiers.make_terminal_id(n),
                model="PAX A920",
                kind=Terminal.Kind.SMART,
                status=Terminal.Status.ACTIVE,
            )
            for n in range(1, count + 1)
        ],
        batch_size=2000,
    )
    Binding.objects.bulk_create(
        [
            Binding(terminal=t, merchant=m, started_at=now)
            for m, t in zip(merchants, terminals, strict=True)
        ],
        batch_size=2000,
    )
    return [
        Merchant(m.merchant_id, m.uscc, m.legal_rep_name, t.serial_number)
        for m, t in zip(merchants, terminals, strict=True)
    ]


# --- HTTP ---------------------------------------------------------------------------


def multipart(fields: list[tuple[str, str]], files: list[tuple[str, str, bytes]]):
    """Encode a multipart/form-data body; return (content type, body)."""
    boundary = f"----bench{secrets.token_hex(12)}"
    parts = []
    for name, value in fields:
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'
            f"{value}\r\n".encode()
        )
    for name, filename, content in files:
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; '
            f'filename="{filename}"\r\nContent-Type: application/pdf\r\n\r\n'.encode()
        )
        parts.append(content)
        parts.append(b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return f"multipart/form-data; boundary={boundary}", b"".join(parts)


class Browser:
    """One client on loopback: a fresh connection per request, cookies kept."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.cookies: dict[str, str] = {}

    def request(self, method: str, path: str, body: bytes | None = None, headers=None):
        headers = dict(headers or {})
        headers["Host"] = f"127.0.0.1:{self.port}"
        headers["Accept-Language"] = "zh-hans"
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        try:
            conn.request(method, path, body=body, headers=headers)
            response = conn.getresponse()
            content = response.read()
        finally:
            conn.close()
        for header in response.headers.get_all("Set-Cookie") or []:
            cookie = SimpleCookie(header)
            for key, morsel in cookie.items():
                self.cookies[key] = morsel.value
        return response.status, response.getheader("Location") or "", content


@dataclass
class Outcome:
    filing_seconds: list[float] = field(default_factory=list)
    post_seconds: list[float] = field(default_factory=list)
    get_seconds: list[float] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    elapsed: float = 0.0
    web_cpu_seconds: float = 0.0


class Load:
    """Run ``concurrency`` clients for ``duration`` seconds; each loop is one filing."""

    def __init__(self, *, port, duration, concurrency, merchants, pdfs, ceiling):
        self.port = port
        self.duration = duration
        self.concurrency = concurrency
        self.merchants = merchants
        self.pdfs = pdfs
        self.ceiling = ceiling
        self.lock = threading.Lock()
        self.outcome = Outcome()

    def next_merchant(self) -> Merchant | None:
        with self.lock:
            return self.merchants.pop() if self.merchants else None

    def fields(self, merchant: Merchant, csrf: str, key: str) -> list[tuple[str, str]]:
        return [
            ("csrfmiddlewaretoken", csrf),
            ("submission_key", key),
            ("merchant_id", merchant.merchant_id),
            ("uscc", merchant.uscc),
            ("legal_rep_name", merchant.legal_rep_name),
            ("applicant_name", merchant.legal_rep_name),
            ("applicant_is_legal_rep", "on"),
            ("applicant_phone", "13800138000"),
            ("applicant_email", "applicant@bench.example.com"),
            ("serial_numbers", merchant.serial_number),
            ("reason", "business_change"),
            ("reason_detail", ""),
            ("replacement_serial_number", ""),
            ("declaration", "on"),
        ]

    def one(self, browser: Browser, merchant: Merchant) -> None:
        path = "/ceiling/upload/" if self.ceiling else "/requests/new/"
        started = time.perf_counter()
        status, _location, page = browser.request("GET", path)
        got = time.perf_counter()
        if status != 200:
            raise RuntimeError(f"GET {path}: HTTP {status}")
        html = page.decode()
        csrf = re.search(HIDDEN_RE.format(name="csrfmiddlewaretoken"), html)
        key = re.search(HIDDEN_RE.format(name="submission_key"), html)
        if csrf is None or (key is None and not self.ceiling):
            raise RuntimeError(f"GET {path}: no CSRF token or submission key")
        content_type, body = multipart(
            self.fields(merchant, csrf.group(1), key.group(1) if key else ""),
            [
                ("business_licence", "营业执照.pdf", self.pdfs[0]),
                ("legal_rep_id", "身份证.pdf", self.pdfs[1]),
                ("device_evidence", "设备照片.pdf", self.pdfs[2]),
            ],
        )
        status, location, content = browser.request(
            "POST",
            path,
            body,
            {"Content-Type": content_type, "Referer": f"http://127.0.0.1{path}"},
        )
        done = time.perf_counter()
        match = (CEILING_RE if self.ceiling else VERIFY_RE).match(location)
        if status != 302 or match is None:
            errors = re.findall(
                r'class="[^"]*(?:invalid-feedback|errorlist)[^"]*"[^>]*>(.*?)<',
                content.decode(errors="replace"),
            )
            raise RuntimeError(f"POST {path}: HTTP {status} {location} {errors[:3]}")
        with self.lock:
            self.outcome.get_seconds.append(got - started)
            self.outcome.post_seconds.append(done - got)
            self.outcome.filing_seconds.append(done - started)
            self.outcome.keys.append(match.group(1))

    def worker(self, deadline: float) -> None:
        browser = Browser(self.port)
        while time.perf_counter() < deadline:
            merchant = self.next_merchant()
            if merchant is None:
                with self.lock:
                    self.outcome.errors.append("ran out of merchants")
                return
            try:
                self.one(browser, merchant)
            except Exception as exc:  # every failure counts as an error
                with self.lock:
                    self.outcome.errors.append(str(exc)[:300])

    def run(self) -> Outcome:
        started = time.perf_counter()
        deadline = started + self.duration
        threads = [
            threading.Thread(target=self.worker, args=(deadline,))
            for _ in range(self.concurrency)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        self.outcome.elapsed = time.perf_counter() - started
        return self.outcome


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_gunicorn(options: list[str], *, env: dict, log: Path) -> tuple:
    port = free_port()
    gunicorn = Path(sys.executable).parent / "gunicorn"
    process = subprocess.Popen(
        [
            str(gunicorn),
            "config.wsgi:application",
            "--bind",
            f"127.0.0.1:{port}",
            "--chdir",
            str(ROOT),
            "--timeout",
            "120",
            "--error-logfile",
            str(log),
            *options,
        ],
        env=env,
        start_new_session=True,
    )
    for _ in range(300):
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/healthz/", headers={"Host": "127.0.0.1"})
            if conn.getresponse().status == 200:
                return process, port
        except OSError:
            pass
        if process.poll() is not None:
            sys.exit(f"gunicorn exited; see {log}")
        time.sleep(0.2)
    stop(process)
    sys.exit(f"gunicorn did not answer /healthz/; see {log}")


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


# --- checks, profile, report ----------------------------------------------------------


def verify(product_keys: list[str], ceiling_keys: list[str]) -> list[str]:
    """Every product success opened a case; every ceiling success wrote its row."""
    from django.db import connection

    from bench.ceiling.views import TABLE
    from cases.models import Case, CaseState

    problems = []
    cases = Case.objects.count()
    if cases != len(product_keys):
        problems.append(f"{cases} case rows for {len(product_keys)} successful filings")
    for token in product_keys:
        case = Case.objects.by_token(token).first()
        if case is None or case.state != CaseState.PENDING_VERIFICATION:
            problems.append(f"no pending case for token {token[:8]}…")
            break
        if case.documents.count() != 3:
            problems.append(
                f"case {case.reference} has {case.documents.count()} documents"
            )
            break
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT count(*) FROM {TABLE}")
        rows = cursor.fetchone()[0]
    if rows != len(ceiling_keys):
        problems.append(
            f"{rows} ceiling rows for {len(ceiling_keys)} ceiling successes"
        )
    return problems


def process_cpu_seconds(pid: int | str) -> float:
    """CPU time a live process has run, from ``/proc/<pid>/schedstat``.

    Its first field is the scheduler's own count in nanoseconds; the
    ``utime``/``stime`` of ``/proc/<pid>/stat`` are whole clock ticks,
    truncated per process, which turns a backend that lives for one request
    into 0. It counts one thread: ``pid`` may name one, ``<pid>/task/<tid>``.
    """
    return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0]) / 1e9


def workers_cpu_seconds(master: subprocess.Popen) -> float:
    """CPU of gunicorn's live workers (the children of its master), every thread."""
    children = Path(f"/proc/{master.pid}/task/{master.pid}/children").read_text()
    return sum(
        process_cpu_seconds(f"{pid}/task/{task.name}")
        for pid in children.split()
        for task in Path(f"/proc/{pid}/task").iterdir()
    )


@dataclass
class Costs:
    """Per filing: this process's CPU (ms), the PostgreSQL backend's CPU (ms)."""

    get_ms: float
    post_ms: float
    queries: int
    pg_new_connection_ms: float
    pg_persistent_ms: float

    @property
    def web_ms(self) -> float:
        return self.get_ms + self.post_ms


def measure(merchants: list[Merchant], pdfs: list[bytes], count: int = 40) -> dict:
    """CPU per filing of the product and the ceiling, in process (test client).

    The web figure is ``time.process_time`` around each request. The
    PostgreSQL figure is the CPU (``/proc/<pid>/schedstat``) of the server
    process serving this process's connection: once with a new
    connection per request, as the product runs (``CONN_MAX_AGE=0``: each
    backend is forked, authenticates and fills its catalog caches, and its
    whole life is read just before the connection closes), and once over a
    single persistent connection (the queries alone). Needs the server on
    this machine and read access to its processes' ``/proc`` entries.
    """
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    def backend_cpu() -> float:
        if connection.connection is None:
            return 0.0
        return process_cpu_seconds(connection.connection.info.backend_pid)

    def filings(ceiling: bool, batch: list[Merchant], *, fresh: bool):
        """File ``batch``; return CPU seconds: web GET, web POST, PostgreSQL."""
        client = Client(enforce_csrf_checks=True, HTTP_HOST="127.0.0.1")
        load = Load(
            port=0, duration=0, concurrency=1, merchants=[], pdfs=pdfs, ceiling=ceiling
        )
        path = "/ceiling/upload/" if ceiling else "/requests/new/"
        get_cpu = post_cpu = pg_cpu = 0.0
        connection.close()
        if not fresh:
            connection.ensure_connection()
        pg_start = backend_cpu()
        for merchant in batch:
            started = time.process_time()
            html = client.get(path).content.decode()
            get_cpu += time.process_time() - started
            if fresh:
                pg_cpu += backend_cpu()
                connection.close()
            csrf = re.search(HIDDEN_RE.format(name="csrfmiddlewaretoken"), html)
            key = re.search(HIDDEN_RE.format(name="submission_key"), html)
            data = dict(
                load.fields(merchant, csrf.group(1), key.group(1) if key else "")
            )
            for name, pdf in zip(
                ("business_licence", "legal_rep_id", "device_evidence"),
                pdfs,
                strict=True,
            ):
                upload = io.BytesIO(pdf)
                upload.name = f"{name}.pdf"
                data[name] = upload
            posting = time.process_time()
            response = client.post(path, data)
            post_cpu += time.process_time() - posting
            assert response.status_code == 302, response.status_code
            if fresh:
                pg_cpu += backend_cpu()
                connection.close()
        if not fresh:
            pg_cpu = backend_cpu() - pg_start
        return get_cpu, post_cpu, pg_cpu

    results = {}
    for name, ceiling in (("product", False), ("ceiling", True)):
        filings(ceiling, [merchants.pop() for _ in range(3)], fresh=False)  # warm up
        get_cpu, post_cpu, pg_fresh = filings(
            ceiling, [merchants.pop() for _ in range(count)], fresh=True
        )
        _get, _post, pg_kept = filings(
            ceiling, [merchants.pop() for _ in range(count)], fresh=False
        )
        # Counted right away: every request start clears the connection's log.
        with CaptureQueriesContext(connection) as captured:
            filings(ceiling, [merchants.pop()], fresh=False)
        posts = [
            q for q in captured.captured_queries if not q["sql"].startswith("SELECT 1")
        ]
        results[name] = Costs(
            get_ms=get_cpu / count * 1000,
            post_ms=post_cpu / count * 1000,
            queries=len(posts),
            pg_new_connection_ms=pg_fresh / count * 1000,
            pg_persistent_ms=pg_kept / count * 1000,
        )
    return results


def profile(merchants: list[Merchant], pdfs: list[bytes], count: int = 20) -> str:
    """pyinstrument profiles of the product's GET and POST, in process."""
    import re as regex

    from django.test import Client

    try:
        from pyinstrument import Profiler
    except ImportError:
        return "(pyinstrument is not installed: `.venv/bin/pip install pyinstrument`)"

    load = Load(
        port=0, duration=0, concurrency=1, merchants=[], pdfs=pdfs, ceiling=False
    )
    sections = []
    for label in ("GET /requests/new/", "POST /requests/new/"):
        client = Client(enforce_csrf_checks=True, HTTP_HOST="127.0.0.1")
        profiler = Profiler(interval=0.0005)
        for merchant in [merchants.pop() for _ in range(count)]:
            if label.startswith("GET"):
                profiler.start()
            html = client.get("/requests/new/").content.decode()
            if label.startswith("GET"):
                profiler.stop()
                continue
            csrf = regex.search(HIDDEN_RE.format(name="csrfmiddlewaretoken"), html)
            key = regex.search(HIDDEN_RE.format(name="submission_key"), html)
            data = dict(load.fields(merchant, csrf.group(1), key.group(1)))
            for name, pdf in zip(
                ("business_licence", "legal_rep_id", "device_evidence"),
                pdfs,
                strict=True,
            ):
                upload = io.BytesIO(pdf)
                upload.name = f"{name}.pdf"
                data[name] = upload
            profiler.start()
            response = client.post("/requests/new/", data)
            profiler.stop()
            assert response.status_code == 302, response.status_code
        text = profiler.output_text(unicode=True, color=False, show_all=False)
        lines = [line for line in text.splitlines() if line.strip()][4:70]
        sections.append(
            f"{label} ({count} requests):\n\n```\n" + "\n".join(lines) + "\n```"
        )
    return "\n\n".join(sections)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return (
        ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000 if ordered else 0
    )


def row(label: str, outcome: Outcome) -> str:
    rate = len(outcome.keys) / outcome.elapsed if outcome.elapsed else 0
    post = outcome.post_seconds
    web = outcome.web_cpu_seconds / len(outcome.keys) * 1000 if outcome.keys else 0
    return (
        f"| {label} | {len(outcome.keys)} | {rate:.1f} | {pct(post, 0.5):.0f} | "
        f"{pct(post, 0.95):.0f} | {pct(post, 0.99):.0f} | "
        f"{pct(outcome.get_seconds, 0.5):.0f} | {pct(outcome.filing_seconds, 0.5):.0f} | "
        f"{web:.0f} | {len(outcome.errors)} |"
    )


def broker_flush(url: str) -> int:
    """Empty the broker's Redis database (the tasks no worker took); return how many."""
    import redis

    client = redis.Redis.from_url(url)
    queued = sum(
        client.llen(key) for key in client.scan_iter() if client.type(key) == b"list"
    )
    client.flushdb()
    return queued


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=30)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--merchants", type=int, default=8000)
    parser.add_argument(
        "--eager",
        action="store_true",
        help="no broker: run the tasks inside the request (the figures before "
        "2026-12-01)",
    )
    parser.add_argument("--no-profile", action="store_true")
    parser.add_argument("--no-report", action="store_true")
    args = parser.parse_args()

    url = os.environ.get("DATABASE_URL", "")
    if not url.startswith(("postgres://", "postgresql://")):
        sys.exit(
            "set DATABASE_URL to a PostgreSQL database, e.g. .../unbinding_bench_intake"
        )
    database_create_if_missing(url)
    media = tempfile.TemporaryDirectory(prefix="bench-intake-")
    broker_url = "" if args.eager else BROKER_URL
    env = environment(media.name, broker_url=broker_url)
    os.environ.update(env)
    if broker_url:
        broker_flush(broker_url)

    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    merchants = seed_registry(args.merchants)
    merchants.reverse()  # pop() hands them out in order
    pdfs = [pdf_bytes(seed) for seed in (1, 2, 3)]
    sizes = ", ".join(f"{len(p) / 1024:.0f} KB" for p in pdfs)
    print(f"registry: {len(merchants):,} merchants with a bound terminal; PDFs {sizes}")

    results = []
    loads = []
    all_product, all_ceiling = [], []
    log = Path(media.name) / "gunicorn.log"
    load_start = os.getloadavg()
    queued = 0
    try:
        for label, options in CONFIGS:
            process, port = start_gunicorn(options, env=env, log=log)
            try:
                pair = {}
                for name, ceiling in (("product", False), ("ceiling", True)):
                    before = os.getloadavg()[0]
                    cpu_before = workers_cpu_seconds(process)
                    outcome = Load(
                        port=port,
                        duration=args.duration,
                        concurrency=args.concurrency,
                        merchants=merchants,
                        pdfs=pdfs,
                        ceiling=ceiling,
                    ).run()
                    outcome.web_cpu_seconds = workers_cpu_seconds(process) - cpu_before
                    loads.append(f"{before:.1f}")
                    pair[name] = outcome
                    rate = len(outcome.keys) / outcome.elapsed
                    print(
                        f"{label} · {name}: {len(outcome.keys)} filings, {rate:.1f}/s, "
                        f"POST p50 {pct(outcome.post_seconds, 0.5):.0f} ms, "
                        f"errors {len(outcome.errors)} {outcome.errors[:2]}",
                        flush=True,
                    )
                results.append((label, pair))
                all_product += pair["product"].keys
                all_ceiling += pair["ceiling"].keys
            finally:
                stop(process)
        problems = verify(all_product, all_ceiling)
        costs = measure(merchants, pdfs)
        profile_text = "" if args.no_profile else profile(merchants, pdfs)
    finally:
        media.cleanup()
        if broker_url:
            queued = broker_flush(broker_url)
    load_end = os.getloadavg()

    table, ratios = [], []
    for label, pair in results:
        product, ceiling = pair["product"], pair["ceiling"]
        ratio = (len(product.keys) / product.elapsed) / (
            len(ceiling.keys) / ceiling.elapsed
        )
        ratios.append((label, ratio))
        table.append(row(f"{label} · **product** `/requests/new/`", product))
        table.append(row(f"{label} · ceiling `/ceiling/upload/`", ceiling))
    ratio_lines = "\n".join(
        f"- {label}: product / ceiling = **{ratio:.2f}** "
        f"({'goal met' if ratio >= GOAL else f'goal ≥ {GOAL} **missed**'})"
        for label, ratio in ratios
    )
    errors = [e for _label, pair in results for o in pair.values() for e in o.errors]
    checks = (
        "Every success was checked: each product token opens a pending case with "
        "its three documents; the ceiling wrote one row per success."
        if not problems
        else "Checks failed:\n\n" + "\n".join(f"- {p}" for p in problems)
    )
    error_text = (
        "No errors."
        if not errors
        else "Errors (first five):\n\n" + "\n".join(f"- `{e}`" for e in errors[:5])
    )
    product, ceiling = costs["product"], costs["ceiling"]
    tasks = (
        f"tasks queued to Redis (`{broker_url}`, no worker: the document previews "
        f"and the verification e-mail are a worker's work, as in production; the "
        f"{queued:,} queued tasks were dropped afterwards)"
        if broker_url
        else "tasks in-process (no broker: previews and e-mails run in the request)"
    )
    conn_max_age = env.get("CONN_MAX_AGE", "0")
    web_goal = "met" if product.web_ms < WEB_CPU_GOAL_MS else "**missed**"
    pg_goal = "met" if product.pg_new_connection_ms < PG_CPU_GOAL_MS else "**missed**"
    body = f"""
gunicorn on 127.0.0.1, DEBUG off, PostgreSQL (`CONN_MAX_AGE={conn_max_age}`),
{tasks}, e-mail to a dummy backend, throttling off,
documents to a temporary MEDIA_ROOT. The load generator (Python threads,
`http.client`, a new connection per request as the sync worker closes it)
runs on the same 2-core machine, {args.concurrency} clients for {args.duration:.0f} s per row.
One filing = GET the form (CSRF cookie and token, submission key) + POST the
multipart form with three PDFs ({sizes}); the product must answer 302 to
`/requests/<token>/verify/`. The ceiling (`bench/ceiling/views.py`) is served
by the same gunicorn with the same settings and middleware: its GET hands out
the CSRF token, its POST saves the same three files with
`default_storage.save` and inserts one row. Load average (1 min) at the start
{load_start[0]:.1f}, before each row {", ".join(loads)}, at the end {load_end[0]:.1f}.
"web CPU" is the gunicorn workers' CPU (`/proc/<pid>/schedstat`) over the row,
per filing.

| server · target | filings | filings/s | POST p50 ms | POST p95 ms | POST p99 ms | GET p50 ms | filing p50 ms | web CPU ms/filing | errors |
|---|---|---|---|---|---|---|---|---|---|
{chr(10).join(table)}

{ratio_lines}

{checks} {error_text}

### CPU per filing

In process with the test client, 40 filings each (`measure()`): the web
process's CPU by `time.process_time`, PostgreSQL's as the CPU of the server
process behind the connection (`/proc/<backend pid>/schedstat`), with a new
connection per request as `CONN_MAX_AGE=0` does (fork, authentication, cold
catalog caches included) and over one persistent connection.

| | web GET ms | web POST ms | web total ms | SQL queries in the POST | PostgreSQL ms, new connection per request | PostgreSQL ms, persistent connection |
|---|---:|---:|---:|---:|---:|---:|
| product | {product.get_ms:.1f} | {product.post_ms:.1f} | **{product.web_ms:.1f}** | {product.queries} | **{product.pg_new_connection_ms:.1f}** | {product.pg_persistent_ms:.1f} |
| ceiling | {ceiling.get_ms:.1f} | {ceiling.post_ms:.1f} | {ceiling.web_ms:.1f} | {ceiling.queries} | {ceiling.pg_new_connection_ms:.1f} | {ceiling.pg_persistent_ms:.1f} |

Goals: web CPU per filing under {WEB_CPU_GOAL_MS} ms ({web_goal}), PostgreSQL CPU
per filing under {PG_CPU_GOAL_MS} ms with the product's settings ({pg_goal}).
Both servers share the two cores with PostgreSQL and the load generator, so
the throughput ratio tracks the ratio of CPU per filing: about
{(ceiling.web_ms + ceiling.pg_new_connection_ms) / (product.web_ms + product.pg_new_connection_ms):.2f}
here (ceiling's web + PostgreSQL CPU over the product's).

### Profile of the product (pyinstrument, wall time, in process)

{profile_text}
"""
    print(body)
    if not args.no_report:
        from bench.report import write_section

        write_section("intake", "Intake throughput against the Django ceiling", body)


if __name__ == "__main__":
    main()
