"""Benchmark the API's case detail alone, on the staff-queue databases.

Usage::

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/unb_queue_bench \\
        CACHE_URL=redis://127.0.0.1:6379/3 \\
        .venv/bin/python bench/api_detail.py [--requests 200] [--profile FILE]

Reads the databases that ``bench/staff_queue.py --reuse`` generated (the 10k
cases in ``<database>_small``, the 1M in the database itself) and changes
nothing in them: the run's read-only API key is created inside a transaction
that is rolled back at the end (so are the key's ``last_used_at`` updates).
No migration is applied: the script stops if the schema is behind.

``GET /api/v1/cases/<reference>/`` is requested in this process through
Django's test ``Client`` (the whole middleware stack, DRF, the throttle in the
cache of ``CACHE_URL``), with DEBUG off and the production settings, for
``--requests`` different cases after a warm-up; prints p50/p95 wall-clock, the
median CPU time per request, the SQL time and the number of queries (from one
more request under ``CaptureQueriesContext``), and the load average before
and after. ``--profile FILE`` writes a pyinstrument text profile of the
measured requests at the large size.
"""

import argparse
import os
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

WARMUP = 20


def _targets(count: int, seed: int) -> list[str]:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT max(id) FROM cases_case")
        top = cursor.fetchone()[0]
        ids = random.Random(seed).sample(range(1, top + 1), count + WARMUP)
        cursor.execute(
            "SELECT reference FROM cases_case WHERE id = ANY(%s) ORDER BY random()",
            [ids],
        )
        return [row[0] for row in cursor.fetchall()]


def _measure(references: list[str], *, profile: str | None) -> dict:
    from django.db import connection, transaction
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    from api.services import api_key_create

    client = Client()
    with transaction.atomic():
        _api_key, key = api_key_create(
            name=f"bench-api-{random.randrange(10**9)}", scopes=["cases:read"]
        )
        headers = {"HTTP_AUTHORIZATION": f"Api-Key {key}"}
        for reference in references[:WARMUP]:
            client.get(f"/api/v1/cases/{reference}/", **headers)
        measured = references[WARMUP:]
        profiler = None
        if profile:
            from pyinstrument import Profiler

            profiler = Profiler(interval=0.001)
            profiler.start()
        timings, cpu = [], []
        for reference in measured:
            started, cpu_started = time.perf_counter(), time.process_time()
            response = client.get(f"/api/v1/cases/{reference}/", **headers)
            timings.append((time.perf_counter() - started) * 1000)
            cpu.append((time.process_time() - cpu_started) * 1000)
            if response.status_code != 200:
                sys.exit(f"{reference}: HTTP {response.status_code}")
            if f'"reference":"{reference}"' not in response.content.decode():
                sys.exit(f"{reference}: not in the answer")
        if profiler is not None:
            profiler.stop()
            Path(profile).write_text(
                profiler.output_text(unicode=True, color=False, show_all=False)
            )
        with CaptureQueriesContext(connection) as captured:
            client.get(f"/api/v1/cases/{measured[0]}/", **headers)
        transaction.set_rollback(True)
    timings.sort()
    return {
        "p50": statistics.median(timings),
        "p95": timings[int(len(timings) * 0.95) - 1],
        "cpu": statistics.median(cpu),
        "cpu_mean": statistics.mean(cpu),
        "sql_ms": sum(float(q["time"]) for q in captured.captured_queries) * 1000,
        "queries": len(captured.captured_queries),
        "sql": [q["sql"] for q in captured.captured_queries],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--seed", type=int, default=15)
    parser.add_argument("--profile", help="pyinstrument text profile (large size)")
    parser.add_argument("--only", choices=["small", "large"])
    parser.add_argument("--show-sql", action="store_true")
    args = parser.parse_args()

    os.environ["DJANGO_SETTINGS_MODULE"] = "bench.ceiling.settings"
    os.environ.setdefault("SECRET_KEY", "benchmark-only-key-not-secret-0123456789")
    os.environ["DEBUG"] = "0"
    os.environ["ALLOWED_HOSTS"] = "testserver"
    os.environ["SECURE_SSL_REDIRECT"] = "0"
    url = os.environ.get("DATABASE_URL", "")
    if not url.startswith(("postgres://", "postgresql://")):
        sys.exit(
            "set DATABASE_URL to the staff-queue database, e.g. .../unb_queue_bench"
        )
    large = url.rsplit("/", 1)[1].split("?")[0]

    import django

    django.setup()
    from django.db import connection, connections
    from django.db.migrations.executor import MigrationExecutor

    print(f"load average at start: {os.getloadavg()}", flush=True)
    for label, name in (("10k", f"{large}_small"), ("1M", large)):
        if args.only and (label == "10k") != (args.only == "small"):
            continue
        connections["default"].close()
        connections["default"].settings_dict["NAME"] = name
        executor = MigrationExecutor(connection)
        if executor.migration_plan(executor.loader.graph.leaf_nodes()):
            sys.exit(f"{name}: unapplied migrations; this script changes nothing")
        references = _targets(args.requests, args.seed)
        result = _measure(references, profile=args.profile if label == "1M" else None)
        print(
            f"  {label:4} API case detail  p50 {result['p50']:6.1f} ms  "
            f"p95 {result['p95']:6.1f} ms  cpu {result['cpu']:5.1f} ms "
            f"(mean {result['cpu_mean']:5.1f})  sql {result['sql_ms']:5.1f} ms  "
            f"{result['queries']} queries",
            flush=True,
        )
        if args.show_sql:
            for sql in result["sql"]:
                print(f"    {sql[:300]}")
    print(f"load average at end: {os.getloadavg()}", flush=True)


if __name__ == "__main__":
    main()
