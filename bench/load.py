"""Bounded load test: merchants filing and staff approving at once while workers execute.

Usage::

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/unbinding_bench_load \\
    CELERY_BROKER_URL=redis://127.0.0.1:6379/12 \\
        .venv/bin/python bench/load.py [--cases 300] [--merchants 8] [--staff 3]
        [--workers 2] [--max-seconds 600] [--no-report]

Loopback only, and bounded twice: it stops after ``--cases`` filings and gives
up after ``--max-seconds``. Creates and migrates the database if needed and
empties it, flushes the Redis database named by CELERY_BROKER_URL, starts an
aiosmtpd sink and real Celery workers (``tests.integration.harness``), then:

- merchant threads, each with its own Django test client and client address,
  each file one request through the real multipart form (four PDFs), read the
  code from the e-mail that reached the sink, enter it, look at the tracking
  page, and one in ten withdraw afterwards (racing the staff);
- staff threads, at the same time, each take submitted cases (racing each
  other for them), accept every document, recommend, and have an approver
  approve, through the services the admin calls;
- the workers execute the approved cases and send every e-mail.

When everything has settled it checks the invariants of
``tests.faults.invariants`` on every case and writes the figures to the
``load`` section of docs/reliability.md. ``tests/faults/test_load.py`` runs
the same load, small, in the test suite.
"""

import argparse
import logging
import os
import random
import re
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

REPORT = ROOT / "docs" / "reliability.md"
WITHDRAW_EVERY = 10
TRANSACTIONS_PER_TERMINAL = 2
SUBMISSION_KEY = re.compile(r'name="submission_key" value="([0-9a-f]{32})"')


@dataclass
class LoadFigures:
    cases: int = 0
    requests: int = 0
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)
    staff_actions: int = 0
    staff_conflicts: int = 0
    filing_seconds: list[float] = field(default_factory=list)
    states: dict[str, int] = field(default_factory=dict)
    emails: int = 0
    duration: float = 0.0
    traffic_seconds: float = 0.0
    problems: list[str] = field(default_factory=list)

    @property
    def requests_per_second(self) -> float:
        return self.requests / self.traffic_seconds if self.traffic_seconds else 0.0

    @property
    def cases_per_second(self) -> float:
        return self.states.get("completed", 0) / self.duration if self.duration else 0.0

    def percentile(self, p: float) -> float:
        values = sorted(self.filing_seconds)
        if not values:
            return 0.0
        return values[min(len(values) - 1, round(p / 100 * (len(values) - 1)))]


class _Counters:
    def __init__(self, figures: LoadFigures) -> None:
        self.figures = figures
        self.lock = threading.Lock()

    def request(self, response, expected: int, what: str) -> bool:
        with self.lock:
            self.figures.requests += 1
            if response.status_code == expected:
                return True
            self.figures.errors += 1
            if len(self.figures.error_samples) < 10:
                self.figures.error_samples.append(f"{what}: {response.status_code}")
            return False

    def add(self, name: str, value: float = 1) -> None:
        with self.lock:
            setattr(self.figures, name, getattr(self.figures, name) + value)


def registry_create(count: int) -> list[tuple[object, list]]:
    """``count`` merchants, each with one or two bound terminals with transactions."""
    from tests import factories

    merchants = []
    for n in range(count):
        merchant = factories.MerchantFactory(contact_email=f"m{n}@load.example.com")
        terminals = [
            factories.BindingFactory(merchant=merchant).terminal
            for _ in range(1 + n % 2)
        ]
        for terminal in terminals:
            for _ in range(TRANSACTIONS_PER_TERMINAL):
                factories.TransactionFactory(terminal=terminal)
        merchants.append((merchant, terminals))
    return merchants


def staff_create(count: int) -> list[tuple[object, object]]:
    """``count`` pairs of (reviewer, approver) users."""
    from django.contrib.auth.models import Group

    from cases import roles
    from tests import factories
    from tests.fixtures import ensure_staff_groups

    ensure_staff_groups()
    pairs = []
    for k in range(count):
        reviewer = factories.UserFactory(username=f"load-reviewer-{k}", is_staff=True)
        reviewer.groups.add(Group.objects.get(name=roles.REVIEWER))
        approver = factories.UserFactory(username=f"load-approver-{k}", is_staff=True)
        approver.groups.add(Group.objects.get(name=roles.APPROVER))
        pairs.append((reviewer, approver))
    return pairs


def _code_for(sink, address: str) -> str | None:
    for message in reversed(sink.received()):
        if address in message["X-Envelope-To"]:
            body = message.get_body(("plain",)).get_content()
            match = re.search(r"(?<![\d-])(\d{6})(?!\d)", body)
            if match:
                return match.group(1)
    return None


def _merchant(n, merchant, terminals, *, sink, counters, deadline) -> None:
    """One merchant: file, read the code from the e-mail, verify, track (withdraw)."""
    from django.test import Client

    from tests.faults.harness import filing_form

    client = Client(
        REMOTE_ADDR=f"10.{n // 65536 % 256}.{n // 256 % 256}.{n % 256}",
        raise_request_exception=False,
    )
    page = client.get("/requests/new/")
    if not counters.request(page, 200, "GET /requests/new/"):
        return
    key = SUBMISSION_KEY.search(page.content.decode()).group(1)
    started = time.monotonic()
    response = client.post("/requests/new/", filing_form(merchant, terminals, key=key))
    if not counters.request(response, 302, "POST /requests/new/"):
        return
    with counters.lock:
        counters.figures.filing_seconds.append(time.monotonic() - started)
        counters.figures.cases += 1
    verify_url = response.url
    code = None
    while code is None and time.monotonic() < deadline:
        code = _code_for(sink, merchant.contact_email)
        if code is None:
            time.sleep(0.1)
    if code is None:
        counters.add("errors")
        return
    response = client.post(verify_url, {"code": code})
    if not counters.request(response, 302, "POST verify"):
        return
    detail_url = response.url
    counters.request(client.get(detail_url), 200, "GET tracking page")
    if n % WITHDRAW_EVERY == 0:
        # Races the staff: before approval it withdraws, after it is refused
        # with a message; both answer with a redirect to the tracking page.
        response = client.post(detail_url + "withdraw/")
        counters.request(response, 302, "POST withdraw")


def _staff(reviewer, approver, *, counters, merchants_done, deadline) -> None:
    """Take submitted cases, review them to a recommendation and approve them."""
    from django.core.exceptions import PermissionDenied

    from cases.models import Case, CaseState
    from cases.services.common import CaseActionError
    from cases.services.review import case_transition
    from tests.faults.harness import review_to_approval

    while time.monotonic() < deadline:
        waiting = list(
            Case.objects.filter(state=CaseState.SUBMITTED).values_list("pk", flat=True)[
                :20
            ]
        )
        if not waiting:
            if merchants_done.is_set():
                return
            time.sleep(0.05)
            continue
        case = Case.objects.get(pk=random.choice(waiting))
        try:
            review_to_approval(case, reviewer=reviewer)
            case_transition(case_id=case.pk, name="approve", actor=approver)
        except (CaseActionError, PermissionDenied):
            # Another reviewer took it first, or the merchant withdrew it.
            counters.add("staff_conflicts")
        except Exception as exc:  # counted, and the staff member carries on
            with counters.lock:
                counters.figures.errors += 1
                counters.figures.error_samples.append(f"staff: {exc!r}"[:200])
        else:
            counters.add("staff_actions")


def _thread(target, *args, **kwargs) -> threading.Thread:
    def run() -> None:
        from django.db import connections

        try:
            target(*args, **kwargs)
        finally:
            connections.close_all()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def _settled(case_ids: list[int]) -> bool:
    from cases.models import Case, CaseState, Notification

    busy = [CaseState.APPROVED, CaseState.EXECUTING, CaseState.IN_REVIEW]
    return (
        not Case.objects.filter(pk__in=case_ids, state__in=busy).exists()
        and not Notification.objects.filter(
            case_id__in=case_ids, status=Notification.Status.PENDING
        ).exists()
    )


def run_load(
    *,
    cases: int,
    sink,
    merchants: int = 8,
    staff: int = 3,
    max_seconds: float = 600,
) -> LoadFigures:
    """Run the load against the current database and workers; return the figures.

    Celery in this process must publish to the workers' broker, and the
    workers must send mail to ``sink``.
    """
    from concurrent.futures import ThreadPoolExecutor

    from cases.models import Case, CaseTerminal, Notification
    from tests.faults.invariants import binding_problems, case_problems, mail_problems

    figures = LoadFigures()
    counters = _Counters(figures)
    registry = registry_create(cases)
    pairs = staff_create(staff)
    terminal_ids = [t.pk for _m, terminals in registry for t in terminals]

    started = time.monotonic()
    deadline = started + max_seconds
    merchants_done = threading.Event()
    staff_threads = [
        _thread(
            _staff,
            reviewer,
            approver,
            counters=counters,
            merchants_done=merchants_done,
            deadline=deadline,
        )
        for reviewer, approver in pairs
    ]

    def merchant(item) -> None:
        from django.db import connections

        n, (m, terminals) = item
        try:
            _merchant(n, m, terminals, sink=sink, counters=counters, deadline=deadline)
        finally:
            connections.close_all()

    with ThreadPoolExecutor(max_workers=merchants) as pool:
        list(pool.map(merchant, enumerate(registry)))
    merchants_done.set()
    for thread in staff_threads:
        thread.join(timeout=max(0.0, deadline - time.monotonic()))
    figures.traffic_seconds = time.monotonic() - started

    case_ids = list(
        CaseTerminal.objects.filter(terminal_id__in=terminal_ids)
        .values_list("case_id", flat=True)
        .distinct()
    )
    while not _settled(case_ids) and time.monotonic() < deadline:
        time.sleep(0.2)
    figures.duration = time.monotonic() - started
    if not _settled(case_ids):
        figures.problems.append(f"not settled after {max_seconds} s")

    load_cases = list(Case.objects.filter(pk__in=case_ids).select_related("merchant"))
    figures.states = dict(Counter(c.state for c in load_cases))
    for case in load_cases:
        figures.problems += case_problems(case)
    figures.problems += binding_problems(terminal_ids)
    notices = list(Notification.objects.filter(case_id__in=case_ids))
    messages = [
        m
        for m in sink.received()
        if m["X-Notification-Id"] in {str(n.pk) for n in notices}
    ]
    figures.emails = len(messages)
    figures.problems += mail_problems(messages, notices)
    return figures


def figures_markdown(
    figures: LoadFigures, *, merchants: int, staff: int, workers: int
) -> str:
    states = ", ".join(
        f"{state} {count}" for state, count in sorted(figures.states.items())
    )
    rows = [
        ("merchants (threads) / staff (threads) / worker processes", f"{merchants} / {staff} / {workers}"),
        ("cases filed", figures.cases),
        ("HTTP requests (form GET + POST, code POST, tracking GET, withdraw POST)", figures.requests),
        ("errors (unexpected status or missing e-mail)", figures.errors),
        ("staff approvals / refused races (case taken or withdrawn first)", f"{figures.staff_actions} / {figures.staff_conflicts}"),
        ("final states", states),
        ("e-mails received (each exactly once)", figures.emails),
        ("traffic phase (all requests and approvals)", f"{figures.traffic_seconds:.1f} s"),
        ("duration until every case and e-mail settled", f"{figures.duration:.1f} s"),
        ("throughput: HTTP requests/s during the traffic phase", f"{figures.requests_per_second:.1f}"),
        ("throughput: cases completed/s over the whole run", f"{figures.cases_per_second:.2f}"),
        ("filing POST p50 / p95", f"{figures.percentile(50) * 1000:.0f} ms / {figures.percentile(95) * 1000:.0f} ms"),
        ("invariant violations", len(figures.problems)),
    ]  # fmt: skip
    lines = ["| figure | value |", "|---|---|"]
    lines += [f"| {name} | {value} |" for name, value in rows]
    if figures.problems:
        lines += ["", "Violations (first 20):", ""]
        lines += [f"- {p}" for p in figures.problems[:20]]
    return "\n".join(lines)


def write_report(body: str, command: str) -> None:
    from datetime import UTC, datetime

    from bench.report import machine

    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    section = (
        "<!-- bench:load -->\n"
        f"- Date: {stamp}\n- Machine: {machine()}\n- Command: `{command}`\n\n"
        f"{body.strip()}\n<!-- /bench:load -->"
    )
    text = REPORT.read_text() if REPORT.exists() else "# Reliability\n"
    pattern = re.compile(r"<!-- bench:load -->.*?<!-- /bench:load -->", re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: section, text)
    else:
        text = text.rstrip() + "\n\n" + section + "\n"
    REPORT.write_text(text)
    print(f"wrote the load figures to {REPORT}")


def reset_data() -> None:
    from django.contrib.auth import get_user_model
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "TRUNCATE cases_notification, cases_executionstep, cases_caseevent, "
            "cases_document, cases_caseterminal, cases_case, terminals_transaction, "
            "terminals_settlementbatch, terminals_binding, terminals_terminal, "
            "terminals_merchant RESTART IDENTITY CASCADE"
        )
    get_user_model().objects.filter(username__startswith="load-").delete()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cases", type=int, default=300)
    parser.add_argument("--merchants", type=int, default=8)
    parser.add_argument("--staff", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--max-seconds", type=float, default=600)
    parser.add_argument("--no-report", action="store_true")
    args = parser.parse_args()

    database = os.environ.get("DATABASE_URL", "")
    broker = os.environ.get("CELERY_BROKER_URL", "")
    if not database.startswith("postgres") or not broker.startswith("redis"):
        sys.exit("set DATABASE_URL (PostgreSQL) and CELERY_BROKER_URL (Redis)")
    # The test settings with the real broker: this process publishes, the
    # workers (INTEGRATION_WORKER=1) execute and send mail to the sink.
    os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings_test"
    os.environ["DEPARTMENT_EMAILS"] = (
        "finance=fin@load.example.com,sales=sales@load.example.com"
    )
    workdir = Path(tempfile.mkdtemp(prefix="bench-load-"))
    os.environ["MEDIA_ROOT"] = str(workdir / "documents")
    # Imported late, like django below: the environment above is read at import.
    from bench.execution import database_prepare

    database_prepare(database)

    import django

    django.setup()
    from django.test.utils import setup_test_environment

    # The test client's host name is allowed, and this process sends no mail.
    setup_test_environment()
    logging.getLogger("mail.log").setLevel(logging.WARNING)  # aiosmtpd, per line
    from tests.integration.harness import (
        SmtpSink,
        Worker,
        celery_broker,
        flush_redis,
    )

    reset_data()
    flush_redis(broker)
    sink = SmtpSink()
    sink.start()
    workers = []
    try:
        with celery_broker(broker):
            for k in range(args.workers):
                worker = Worker(
                    name=f"load{k}",
                    broker_url=broker,
                    smtp_url=sink.url,
                    log_dir=workdir,
                    LOG_LEVEL="WARNING",
                )
                workers.append(worker.start(timeout=60))
            figures = run_load(
                cases=args.cases,
                sink=sink,
                merchants=args.merchants,
                staff=args.staff,
                max_seconds=args.max_seconds,
            )
    finally:
        for worker in workers:
            worker.stop()
        sink.stop()
        flush_redis(broker)
    body = figures_markdown(
        figures, merchants=args.merchants, staff=args.staff, workers=args.workers
    )
    print(body)
    if figures.error_samples:
        print("errors:", figures.error_samples)
    if not args.no_report:
        write_report(body, " ".join([".venv/bin/python", *sys.argv]))
    if figures.errors or figures.problems:
        sys.exit(1)


if __name__ == "__main__":
    main()
