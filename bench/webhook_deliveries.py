"""Benchmark webhook deliveries by a real Celery worker to a loopback receiver.

Usage::

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/unbinding_bench_webhooks \\
    CELERY_BROKER_URL=redis://127.0.0.1:6379/13 \\
        .venv/bin/python bench/webhook_deliveries.py [--cases 1000] [--per-case 2]

(The script is not named ``webhooks.py``: run as ``bench/<name>.py``, that
would shadow the product's ``webhooks`` app.)

Creates and migrates the database if needed, empties the webhook tables,
starts a threaded HTTP receiver on a loopback port in this process (HTTP/1.1,
keep-alive; it checks the Standard Webhooks signature of every tenth POST
with the subscription's secret), subscribes it, writes ``--per-case``
pending deliveries for each of ``--cases`` cases (``case.executing`` then
``case.completed``, the payload the product builds) and queues them the way
the product does after a case's transaction commits
(``webhooks.services._queue``, one call per case). A ``celery worker -c N``
consuming ``default`` then sends them; the rate is measured from the worker
being ready to the last delivery marked delivered. The run checks that every
delivery reached the receiver exactly once, in order per case, and that every
sampled signature verified. Statements, transactions and the sender's CPU per
delivery are measured in this process (tasks run eagerly) on a sample. Writes
the ``webhooks`` section of docs/benchmarks.md. The Redis database named by
CELERY_BROKER_URL is flushed.
"""

import argparse
import json
import os
import signal
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
# Importable once ROOT is on sys.path (the script runs as bench/<name>.py).
from bench.execution import (  # noqa: E402
    _split,
    database_prepare,
    process_tree_cpu,
    start_workers,
    stop_workers,
)

SAMPLE_CASES = 50
VERIFY_EVERY = 10
EVENTS = ("case.executing", "case.completed")


class Receiver:
    """Threaded HTTP/1.1 receiver: records each POST, verifies a sample of signatures."""

    def __init__(self, secret: str = "") -> None:
        from standardwebhooks import Webhook

        self.secret = secret
        self.lock = threading.Lock()
        self.posts: list[
            tuple[float, str, str]
        ] = []  # (at, webhook-id, reference:type)
        self.verified = 0
        self.bad_signatures = 0
        self.connections = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive when the client wants it

            def setup(self):
                super().setup()
                with receiver.lock:
                    receiver.connections += 1

            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                webhook_id = self.headers["webhook-id"]
                payload = json.loads(body)
                with receiver.lock:
                    n = len(receiver.posts)
                    receiver.posts.append(
                        (
                            time.time(),
                            webhook_id,
                            f"{payload['data']['reference']}:{payload['type']}",
                        )
                    )
                if n % VERIFY_EVERY == 0 and receiver.secret:
                    try:
                        Webhook(receiver.secret).verify(
                            body, {k.lower(): v for k, v in self.headers.items()}
                        )
                        ok = True
                    except Exception:  # any verification failure counts
                        ok = False
                    with receiver.lock:
                        receiver.verified += ok
                        receiver.bad_signatures += not ok
                self.send_response(204)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        ThreadingHTTPServer.daemon_threads = True
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks"

    def reset(self) -> None:
        with self.lock:
            self.posts.clear()
            self.verified = self.bad_signatures = self.connections = 0

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def reset_data() -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "TRUNCATE webhooks_delivery, webhooks_subscription RESTART IDENTITY CASCADE"
        )


def create_deliveries(
    subscription, *, cases: int, per_case: int, offset: int
) -> dict[int, list[int]]:
    """Write ``per_case`` pending deliveries per case; return their ids by case."""
    import uuid
    from datetime import UTC

    from django.conf import settings
    from django.utils import timezone

    from webhooks.models import Delivery

    now = timezone.now()
    stamp = now.astimezone(UTC).isoformat().replace("+00:00", "Z")
    rows = []
    for n in range(offset + 1, offset + cases + 1):
        reference = f"UB-BENCH-{n:06d}"
        for i, event_type in enumerate(EVENTS[:per_case]):
            rows.append(
                Delivery(
                    subscription=subscription,
                    webhook_id=f"msg_{uuid.uuid4().hex}",
                    event_type=event_type,
                    case_id=n,
                    case_reference=reference,
                    payload={
                        "type": event_type,
                        "timestamp": stamp,
                        "data": {
                            "reference": reference,
                            "state": event_type.removeprefix("case."),
                            "previous_state": ("approved", "executing")[i],
                            "merchant_id": f"898110{n:09d}",
                            "serial_numbers": [f"SN{n:010d}"],
                            "updated_at": stamp,
                        },
                    },
                    next_attempt_at=now,
                    created_at=now,
                    retry_until=now + settings.WEBHOOK_RETRY_FOR,
                )
            )
    Delivery.objects.bulk_create(rows)
    by_case: dict[int, list[int]] = {}
    for pk, case_id in (
        Delivery.objects.filter(case_id__gt=offset, case_id__lte=offset + cases)
        .order_by("pk")
        .values_list("pk", "case_id")
    ):
        by_case.setdefault(case_id, []).append(pk)
    return by_case


def queue(by_case: dict[int, list[int]]) -> None:
    """Queue each case's deliveries as the product does after the case's commit."""
    from webhooks.services import _queue

    for ids in by_case.values():
        _queue(ids)


def measure_in_process(by_case: dict[int, list[int]]) -> dict[str, float]:
    """Statements, transactions and sender CPU per delivery, tasks run eagerly."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from config.celery import app

    app.conf.task_always_eager = True
    statements = transactions = 0
    deliveries = sum(len(ids) for ids in by_case.values())
    cpu = time.thread_time()
    wall = time.perf_counter()
    with CaptureQueriesContext(connection) as queries:
        queue(by_case)
    wall = time.perf_counter() - wall
    cpu = time.thread_time() - cpu
    app.conf.task_always_eager = False
    statements, transactions = _split(queries)
    return {
        "sql": statements / deliveries,
        "tx": transactions / deliveries,
        "cpu_ms": cpu / deliveries * 1000,
        "wall_rate": deliveries / wall,
    }


def wait_delivered(ids: list[int], timeout: float) -> None:
    from webhooks.models import Delivery

    deadline = time.monotonic() + timeout
    while True:
        left = (
            Delivery.objects.filter(pk__in=ids)
            .exclude(status=Delivery.Status.DELIVERED)
            .count()
        )
        if not left:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out: {left} deliveries not delivered")
        time.sleep(0.05)


def check(receiver: Receiver, by_case: dict[int, list[int]], offset: int) -> dict:
    """Every delivery exactly once, in order per case; the sampled signatures good."""
    from webhooks.models import Delivery

    expected = dict(
        Delivery.objects.filter(
            pk__in=[pk for ids in by_case.values() for pk in ids]
        ).values_list("webhook_id", "event_type")
    )
    with receiver.lock:
        posts = list(receiver.posts)
    ids = [p[1] for p in posts]
    duplicates = len(ids) - len(set(ids))
    missing = len(set(expected) - set(ids))
    order: dict[str, list[str]] = {}
    for _, _, key in posts:
        reference, event_type = key.split(":", 1)
        order.setdefault(reference, []).append(event_type)
    wanted = list(EVENTS[: len(next(iter(by_case.values())))])
    out_of_order = sum(1 for types in order.values() if types != wanted)
    return {
        "posts": len(posts),
        "duplicates": duplicates,
        "missing": missing,
        "out_of_order": out_of_order,
        "verified": receiver.verified,
        "bad_signatures": receiver.bad_signatures,
        "connections": receiver.connections,
        "first": min((p[0] for p in posts), default=0.0),
        "last": max((p[0] for p in posts), default=0.0),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cases", type=int, default=1000)
    parser.add_argument("--per-case", type=int, default=2, choices=(1, 2))
    parser.add_argument("--processes", type=int, nargs="+", default=[1])
    parser.add_argument("--no-report", action="store_true")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))

    database = os.environ.get("DATABASE_URL", "")
    broker = os.environ.get("CELERY_BROKER_URL", "")
    if not database.startswith("postgres") or not broker.startswith("redis"):
        sys.exit("set DATABASE_URL (PostgreSQL) and CELERY_BROKER_URL (Redis)")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    os.environ.setdefault("DEBUG", "0")
    os.environ.setdefault(
        "SECRET_KEY", "bench-only-secret-key-0123456789-abcdefghijklmnopqrstuvwxyz"
    )
    os.environ.setdefault("ALLOWED_HOSTS", "127.0.0.1")
    os.environ.setdefault("CACHE_URL", broker)  # shared, as in production
    workdir = Path(tempfile.mkdtemp(prefix="bench-webhooks-"))
    database_prepare(database)

    import django

    django.setup()
    import redis

    from config.celery import app
    from webhooks.services import subscription_create

    app.conf.task_always_eager = False
    receiver = Receiver()
    load_before = os.getloadavg()
    rows = []
    offset = 0
    try:
        reset_data()
        subscription = subscription_create(url=receiver.url)
        receiver.secret = subscription.secret

        sample = create_deliveries(
            subscription, cases=SAMPLE_CASES, per_case=args.per_case, offset=offset
        )
        offset += SAMPLE_CASES
        counts = measure_in_process(sample)
        sample_check = check(receiver, sample, 0)
        receiver.reset()
        print(
            f"in process: {counts['sql']:.1f} statements, {counts['tx']:.2f} "
            f"commits, {counts['cpu_ms']:.2f} ms CPU per delivery; {sample_check}"
        )

        for processes in args.processes:
            redis.Redis.from_url(broker).flushdb()
            by_case = create_deliveries(
                subscription, cases=args.cases, per_case=args.per_case, offset=offset
            )
            offset += args.cases
            ids = [pk for pks in by_case.values() for pk in pks]
            queue(by_case)
            load_start = os.getloadavg()[0]
            worker = start_workers(
                processes=processes,
                smtp_port=0,
                broker=broker,
                log=workdir / f"worker-{processes}.log",
                queues="default",
            )
            try:
                started = time.monotonic()
                cpu = process_tree_cpu(worker.pid)
                wait_delivered(ids, timeout=600)
                elapsed = time.monotonic() - started
                cpu = process_tree_cpu(worker.pid) - cpu
            finally:
                stop_workers(worker)
            result = check(receiver, by_case, offset)
            receiver.reset()
            load_end = os.getloadavg()[0]
            rows.append(
                (processes, len(ids), elapsed, result, load_start, load_end, cpu)
            )
            print(
                f"worker CPU {cpu / len(ids) * 1000:.2f} ms per delivery; "
                f"{processes} process(es): {len(ids) / elapsed:.0f} deliveries/s "
                f"({len(ids) / elapsed / processes:.0f} per process); {result}; "
                f"load {load_start:.1f} → {load_end:.1f}"
            )
    finally:
        receiver.stop()
    load_after = os.getloadavg()

    table = [
        "| worker processes | deliveries | seconds | deliveries/s | per process | "
        "worker CPU ms / delivery | "
        "received | duplicates | missing | out of order | signatures checked / bad "
        "| receiver connections | load (1 min) start → end |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for processes, n, elapsed, r, start, end, cpu in rows:
        table.append(
            f"| {processes} | {n} | {elapsed:.1f} | {n / elapsed:.0f} | "
            f"{n / elapsed / processes:.0f} | {cpu / n * 1000:.2f} | "
            f"{r['posts']} | {r['duplicates']} | "
            f"{r['missing']} | {r['out_of_order']} | {r['verified']} / "
            f"{r['bad_signatures']} | {r['connections']} | {start:.1f} → {end:.1f} |"
        )
    body = f"""
{args.cases} cases with {args.per_case} pending webhook deliveries each
({", ".join(f"`{e}`" for e in EVENTS[: args.per_case])}, in that order), queued
as the product queues them after a case's commit (`webhooks.services._queue`,
one call per case), sent by one `celery worker --pool prefork -c N` consuming
`default` over Redis, on PostgreSQL, to a threaded HTTP/1.1 receiver on loopback
in the benchmark's process (it checks the Standard Webhooks signature of every
{VERIFY_EVERY}th POST). The rate runs from the worker being ready to the last
delivery marked delivered; "worker CPU" is the CPU time of the worker's
processes over that span (from /proc): 1000 / that is about what one process
does with a core to itself (on a VM it still grows somewhat with the load). Every delivery is checked received
once and in order per case.

{chr(10).join(table)}

- In process, tasks run eagerly, {SAMPLE_CASES} cases ×
  {args.per_case}: **{counts["sql"]:.1f} SQL statements** and
  {counts["tx"]:.2f} explicit COMMITs per delivery (a statement outside
  one commits on its own), **{counts["cpu_ms"]:.2f} ms
  of the sender's CPU** per delivery (thread time, the receiver excluded),
  {counts["wall_rate"]:.0f} deliveries/s on one thread.
- Goal: ≥ 200 deliveries/s per process.
- Load average (1 min) at the start and the end of the script:
  {load_before[0]:.1f} → {load_after[0]:.1f} on 2 cores.
"""
    print(body)
    if not args.no_report:
        from bench.report import write_section

        write_section("webhooks", "Webhook deliveries", body)


if __name__ == "__main__":
    main()
