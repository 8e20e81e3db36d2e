"""Benchmark the execution of approved cases by real Celery workers over Redis.

Usage::

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/unbinding_bench_execution \\
    CELERY_BROKER_URL=redis://127.0.0.1:6379/13 \\
        .venv/bin/python bench/execution.py [--cases 1000] [--processes 1 2]

Creates and migrates the database if needed, empties it, creates the cases
with bulk inserts (one bound terminal each, with a few transactions), starts
an aiosmtpd sink on a loopback port, then for each worker size: approves
every case at once, queues their execution, and times until every case is
completed and every e-mail (completion to the merchant and the applicant,
one notice per department) has reached the sink. A second, paced run gives
the approval → completion e-mail latency when the workers keep up.
Queries per case are counted in this process over a sample of cases, with
the same code the worker runs. Writes the ``execution`` section of
docs/benchmarks.md. The Redis database named by CELERY_BROKER_URL is flushed.
"""

import argparse
import email.policy
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from decimal import Decimal
from email.parser import BytesHeaderParser
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
# Importable once ROOT is on sys.path (the script runs as bench/<name>.py).
from bench.report import database_create_if_missing  # noqa: E402

DEPARTMENTS = "finance=fin@bench.example.com,sales=sales@bench.example.com"
TRANSACTIONS_PER_TERMINAL = 3
SAMPLE_FOR_QUERIES = 20


def database_prepare(url: str) -> None:
    """Create the database named in ``url`` if it does not exist yet, and migrate it."""
    database_create_if_missing(url)
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
        cwd=ROOT,
        check=True,
    )


class Sink:
    """aiosmtpd handler that notes when each message arrived, by subject."""

    def __init__(self) -> None:
        self.arrivals: list[tuple[float, str, str]] = []
        self.lock = threading.Lock()

    async def handle_DATA(self, server, session, envelope) -> str:
        headers = BytesHeaderParser(policy=email.policy.default).parsebytes(
            envelope.content
        )
        subject = str(headers["Subject"] or "")
        with self.lock:
            self.arrivals.append((time.time(), subject, envelope.rcpt_tos[0]))
        return "250 OK"

    def count(self) -> int:
        with self.lock:
            return len(self.arrivals)


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def reset_data() -> None:
    """Empty the tables the run writes (webhook subscriptions too: none here)."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "TRUNCATE cases_notification, cases_executionstep, cases_caseevent, "
            "cases_document, cases_caseterminal, cases_case, terminals_transaction, "
            "terminals_settlementbatch, terminals_binding, terminals_terminal, "
            "terminals_merchant, webhooks_delivery, webhooks_subscription "
            "RESTART IDENTITY CASCADE"
        )


def create_cases(count: int, *, offset: int) -> list[int]:
    """Bulk-create ``count`` approved cases, one bound terminal each."""
    from datetime import timedelta

    from django.db import transaction
    from django.utils import timezone

    from cases.models import Case, CaseTerminal
    from cases.tokens import tracking_token_fields
    from terminals import identifiers
    from terminals.models import Binding, Merchant, Terminal, Transaction

    now = timezone.now()
    with transaction.atomic():
        merchants = Merchant.objects.bulk_create(
            [
                Merchant(
                    merchant_id=identifiers.make_merchant_id(n),
                    uscc=identifiers.make_uscc(n),
                    name=f"基准测试商贸有限公司{n}",
                    legal_rep_name="王芳",
                    legal_rep_id_number=identifiers.make_resident_id(n),
                    contact_email=f"merchant{n}@bench.example.com",
                    contact_phone="13800138000",
                )
                for n in range(offset + 1, offset + count + 1)
            ]
        )
        terminals = Terminal.objects.bulk_create(
            [
                Terminal(
                    serial_number=identifiers.make_serial_number(n),
                    terminal_id=identifiers.make_terminal_id(n),
                    kind="smart",
                    status="active",
                )
                for n in range(offset + 1, offset + count + 1)
            ]
        )
        Binding.objects.bulk_create(
            [
                Binding(terminal=t, merchant=m, started_at=now - timedelta(days=400))
                for t, m in zip(terminals, merchants, strict=True)
            ]
        )
        Transaction.objects.bulk_create(
            [
                Transaction(
                    terminal=t,
                    amount=Decimal("100.00") + i,
                    occurred_at=now - timedelta(hours=i + 1),
                    settled=i == 0,
                )
                for t in terminals
                for i in range(TRANSACTIONS_PER_TERMINAL)
            ]
        )
        cases = []
        for n, merchant in enumerate(merchants, start=offset + 1):
            salt = f"{n:032x}"
            case = Case(
                reference=f"UB-BENCH-{n:06d}",
                **tracking_token_fields(salt),
                merchant=merchant,
                uscc=merchant.uscc,
                legal_rep_name=merchant.legal_rep_name,
                applicant_name=merchant.legal_rep_name,
                applicant_phone="13900139000",
                applicant_email=f"applicant{n}@bench.example.com",
                reason="business_change",
                language="zh-hans",
                submitted_at=now,
                review_due_at=now + timedelta(days=3),
                state="approved",
            )
            cases.append(case)
        cases = Case.objects.bulk_create(cases)
        CaseTerminal.objects.bulk_create(
            [
                CaseTerminal(case=c, terminal=t)
                for c, t in zip(cases, terminals, strict=True)
            ]
        )
    return [c.pk for c in cases]


def approve_and_queue(case_ids: list[int]) -> dict[str, float]:
    """Stamp the cases approved now and queue their execution; return approval times."""
    from django.db import transaction
    from django.utils import timezone

    from cases.models import Case
    from cases.services.execution import case_execution_dispatch

    approved: dict[str, float] = {}
    for case_id in case_ids:
        with transaction.atomic():
            now = timezone.now()
            Case.objects.filter(pk=case_id).update(
                approved_at=now, execution_queued_at=now
            )
            case_execution_dispatch(case_id=case_id)
        approved[f"UB-BENCH-{case_id:06d}"] = now.timestamp()
    return approved


def start_workers(
    *,
    processes: int,
    smtp_port: int,
    broker: str,
    log: Path,
    queues: str = "default,execution,notifications",
):
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "DEBUG": "0",
        "SECRET_KEY": "bench-only-secret-key-0123456789-abcdefghijklmnopqrstuvwxyz",
        "CELERY_BROKER_URL": broker,
        "EMAIL_URL": f"smtp://127.0.0.1:{smtp_port}",
        "DEPARTMENT_EMAILS": DEPARTMENTS,
        "MEDIA_ROOT": str(log.parent / "media"),
        "CONN_MAX_AGE": "300",
        "LOG_LEVEL": "WARNING",
    }
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "config",
            "worker",
            "-Q",
            queues,
            "--pool",
            "prefork",
            "-c",
            str(processes),
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            "--loglevel",
            "INFO",
            "-n",
            f"bench{processes}@%h",
        ],
        cwd=ROOT,
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while b" ready." not in log.read_bytes():
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(log.read_text())
        time.sleep(0.2)
    return process


def process_tree_cpu(pid: int) -> float:
    """CPU seconds (user + system) used so far by ``pid`` and its descendants.

    Read from /proc: taken when the worker is ready and when its work is done,
    it leaves out the start and the stop, and does not depend on how many
    other processes shared the cores meanwhile.
    """
    tick = os.sysconf("SC_CLK_TCK")
    parents: dict[int, int] = {}
    cpu: dict[int, float] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        own = int(stat.parent.name)
        parents[own] = int(fields[1])
        cpu[own] = (int(fields[11]) + int(fields[12])) / tick
    total, todo = 0.0, [pid]
    while todo:
        current = todo.pop()
        total += cpu.get(current, 0.0)
        todo += [child for child, parent in parents.items() if parent == current]
    return total


def stop_workers(process) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def wait_done(case_ids: list[int], sink: Sink, mails: int, timeout: float):
    from cases.models import Case

    deadline = time.monotonic() + timeout
    while True:
        done = Case.objects.filter(pk__in=case_ids, state="completed").count()
        failed = Case.objects.filter(pk__in=case_ids, state="failed").count()
        if done + failed == len(case_ids) and sink.count() >= mails:
            return done, failed
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"timed out: {done} completed, {failed} failed, {sink.count()} mails"
            )
        time.sleep(0.1)


def completion_latencies(sink: Sink, approved: dict[str, float]) -> list[float]:
    latencies = []
    with sink.lock:
        arrivals = list(sink.arrivals)
    for at, subject, first_recipient in arrivals:
        # The merchant's notice goes to merchantN@...; departments get their own.
        match = re.search(r"UB-BENCH-\d{6}", subject)
        if match is None or not first_recipient.startswith("merchant"):
            continue
        reference = match.group(0)
        if reference in approved:
            latencies.append(at - approved[reference])
    return latencies


TRANSACTION_CONTROL = ("BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE")


def _split(queries) -> tuple[int, int]:
    """(SQL statements, transactions) of a captured block."""
    sql = [q["sql"] for q in queries]
    statements = [q for q in sql if not q.startswith(TRANSACTION_CONTROL)]
    return len(statements), sum(1 for q in sql if q.startswith("COMMIT"))


def count_queries(case_ids: list[int]) -> dict[str, float]:
    """Mean statements and transactions per case (execution) and per e-mail sent."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from cases.models import Notification
    from cases.notifications import notification_send
    from cases.services.execution import case_execute
    from config.celery import app

    app.conf.task_always_eager = False
    per_case = []
    cpu = time.process_time()
    for case_id in case_ids:
        with CaptureQueriesContext(connection) as queries:
            case_execute(case_id=case_id)
        per_case.append(_split(queries))
    cpu = time.process_time() - cpu
    per_notice = []
    for pk in Notification.objects.filter(case_id__in=case_ids).values_list(
        "pk", flat=True
    ):
        with CaptureQueriesContext(connection) as queries:
            notification_send(notification_id=pk)
        per_notice.append(_split(queries))
    return {
        "case_sql": statistics.mean(s for s, _ in per_case),
        "case_tx": statistics.mean(t for _, t in per_case),
        "mail_sql": statistics.mean(s for s, _ in per_notice),
        "mail_tx": statistics.mean(t for _, t in per_notice),
        "case_cpu_ms": cpu / len(case_ids) * 1000,
    }


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values) or [float("nan")]
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cases", type=int, default=1000)
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--paced", type=int, default=150)
    parser.add_argument("--rate", type=float, default=3.0)
    args = parser.parse_args()
    # Stopped with SIGTERM: still stop the workers (the finally blocks).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))

    database = os.environ.get("DATABASE_URL", "")
    broker = os.environ.get("CELERY_BROKER_URL", "")
    if not database.startswith("postgres") or not broker.startswith("redis"):
        sys.exit("set DATABASE_URL (PostgreSQL) and CELERY_BROKER_URL (Redis)")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    # Production settings (cached templates, no query log); DEBUG=1 measures
    # the development server's costs instead.
    os.environ.setdefault("DEBUG", "0")
    os.environ.setdefault(
        "SECRET_KEY", "bench-only-secret-key-0123456789-abcdefghijklmnopqrstuvwxyz"
    )
    os.environ.setdefault("ALLOWED_HOSTS", "127.0.0.1")
    # A cache shared by this script and the workers, as in production (the
    # webhook subscriptions are cached there): the broker's Redis database,
    # flushed with it.
    os.environ.setdefault("CACHE_URL", broker)
    os.environ["DEPARTMENT_EMAILS"] = DEPARTMENTS
    # Only the workers send mail; the query count below sends to nowhere.
    os.environ["EMAIL_URL"] = "dummymail://"
    workdir = Path(tempfile.mkdtemp(prefix="bench-execution-"))
    os.environ["MEDIA_ROOT"] = str(workdir / "media")
    database_prepare(database)

    import django

    django.setup()
    import redis
    from aiosmtpd.controller import Controller

    from config.celery import app

    app.conf.task_always_eager = False
    mails_per_case = 1 + len(DEPARTMENTS.split(","))

    sink = Sink()
    smtp_port = free_port()
    controller = Controller(sink, hostname="127.0.0.1", port=smtp_port)
    controller.start()

    load_before = os.getloadavg()
    rows = []
    latency_rows = []
    offset = 0
    try:
        reset_data()
        sample = create_cases(SAMPLE_FOR_QUERIES, offset=offset)
        offset += SAMPLE_FOR_QUERIES
        counts = count_queries(sample)

        for processes in args.processes:
            redis.Redis.from_url(broker).flushdb()
            ids = create_cases(args.cases, offset=offset)
            offset += args.cases
            approve_and_queue(ids)
            before = sink.count()
            # Executions first (notices wait in their queue), then the e-mails,
            # so that each figure is the work of the worker processes alone.
            worker = start_workers(
                processes=processes,
                smtp_port=smtp_port,
                broker=broker,
                log=workdir / f"worker-{processes}-execution.log",
                queues="execution",
            )
            try:
                started = time.monotonic()
                cpu = process_tree_cpu(worker.pid)
                done, failed = wait_done(ids, sink, 0, timeout=900)
                executing = time.monotonic() - started
                execution_cpu = process_tree_cpu(worker.pid) - cpu
            finally:
                stop_workers(worker)
            worker = start_workers(
                processes=processes,
                smtp_port=smtp_port,
                broker=broker,
                log=workdir / f"worker-{processes}-notifications.log",
                queues="notifications",
            )
            try:
                started = time.monotonic()
                cpu = process_tree_cpu(worker.pid)
                wait_done(ids, sink, before + mails_per_case * done, timeout=900)
                mailing = time.monotonic() - started
                mailing_cpu = process_tree_cpu(worker.pid) - cpu
            finally:
                stop_workers(worker)
            rows.append(
                (
                    processes,
                    len(ids),
                    done,
                    failed,
                    executing,
                    mailing,
                    execution_cpu,
                    mailing_cpu,
                )
            )
            print(
                f"{processes} process(es): {len(ids) / executing:.1f} cases/s, "
                f"{mails_per_case * done / mailing:.1f} e-mails/s; worker CPU "
                f"{execution_cpu / len(ids) * 1000:.1f} ms/case, "
                f"{mailing_cpu / max(1, mails_per_case * done) * 1000:.1f} ms/e-mail"
            )

        # Paced: approvals at a steady rate one process keeps up with.
        redis.Redis.from_url(broker).flushdb()
        ids = create_cases(args.paced, offset=offset)
        worker = start_workers(
            processes=1,
            smtp_port=smtp_port,
            broker=broker,
            log=workdir / "worker-paced.log",
        )
        try:
            before = sink.count()
            approved: dict[str, float] = {}
            for case_id in ids:
                tick = time.monotonic()
                approved.update(approve_and_queue([case_id]))
                time.sleep(max(0.0, 1 / args.rate - (time.monotonic() - tick)))
            wait_done(ids, sink, before + mails_per_case * len(ids), timeout=600)
        finally:
            stop_workers(worker)
        latency_rows = completion_latencies(sink, approved)
    finally:
        controller.stop()

    table = [
        "| worker processes | cases | completed | failed | executions/s | "
        "executions/s per process | worker CPU ms / case | e-mails | e-mails/s | "
        "worker CPU ms / e-mail | end to end cases/s |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for processes, n, done, failed, executing, mailing, ex_cpu, mail_cpu in rows:
        mails = done * mails_per_case
        table.append(
            f"| {processes} | {n} | {done} | {failed} | {n / executing:.1f} | "
            f"{n / executing / processes:.1f} | {ex_cpu / n * 1000:.1f} | {mails} | "
            f"{mails / mailing:.1f} | {mail_cpu / max(1, mails) * 1000:.1f} | "
            f"{n / (executing + mailing):.1f} |"
        )
    body = f"""
{args.cases} approved cases (one bound terminal with {TRANSACTIONS_PER_TERMINAL}
transactions each) queued at once, then executed by one `celery worker --pool
prefork -c N` over Redis on PostgreSQL consuming the `execution` queue (every
step; with the local connector the start commits, then all the steps together,
each in its savepoint), then the queued e-mails sent by a worker of the same size
consuming `notifications` (one batch task per case, its notices over one SMTP
connection), over SMTP to an aiosmtpd sink on loopback ({mails_per_case} per case:
the merchant's completion notice and one per department, each with the CSV export
attached). Each rate is measured from the
worker being ready to the last case completed / the last e-mail received;
"worker CPU" is the CPU time the worker's processes used over that same span
(from /proc), which grows much less with the load of the machine than the
rates: 1000 / (CPU ms per case) is what one process does with a core to
itself, the database's work aside. The
worker shares the machine's 2 cores with PostgreSQL, Redis, the sink and this
script; "end to end" is cases / (execution time + e-mail time).

{chr(10).join(table)}

- Queries per case (the execution task, all seven steps, same code in process,
  one terminal, two departments): **{counts["case_sql"]:.0f} SQL statements** in
  {counts["case_tx"]:.0f} transactions (each transaction adds a BEGIN and a COMMIT
  round trip), **{counts["case_cpu_ms"]:.0f} ms of CPU** per case in this process
  (query capture on); per e-mail sent alone (`notification_send`):
  **{counts["mail_sql"]:.0f} statements** in {counts["mail_tx"]:.0f} transaction.
- Approval → completion e-mail received, {args.paced} cases approved at
  {args.rate:g}/s with one worker process (queueing included when that is more
  than it finishes end to end): p50 **{
        percentile(latency_rows, 50) * 1000:.0f} ms**, p95 **{
        percentile(latency_rows, 95) * 1000:.0f} ms** ({len(latency_rows)} e-mails).
- Goals: ≥ 25 cases/s per worker process, ≤ 2 commits per case, ≥ 100 e-mails/s
  per process.
- Load average (1 min) when the run started → ended: {load_before[0]:.1f} →
  {os.getloadavg()[0]:.1f} on 2 cores;
  anything well above 1 means other work shared the machine and the
  throughput above is a floor, not the ceiling.
"""
    from bench.report import write_section

    write_section("execution", "Execution throughput", body)


if __name__ == "__main__":
    main()
