"""Benchmark ``import_registry`` on PostgreSQL: a first import, then a re-import.

Usage::

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/unbinding_bench \\
        .venv/bin/python bench/import_registry.py [--terminals 100000]
        [--merchants N] [--transactions N] [--file PATH] [--profile DIR]

Issue 15's goal is measured with ``--terminals 1000000 --merchants 200000``.

Creates the database if needed, migrates it, empties the registry tables,
writes a registry JSON file into a temporary directory, then runs the command
twice, each time in a fresh child process so that its wall time and peak
resident memory are its own. Writes the figures to the ``import`` section of
docs/benchmarks.md.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
# Importable once ROOT is on sys.path (the script runs as bench/<name>.py).
from bench.report import database_create_if_missing  # noqa: E402

# Transactions are spread over the first terminals, a few per terminal.
TRANSACTIONS_PER_TERMINAL = 5
KINDS = ("magstripe", "chip", "mobile", "smart", "qr")
MODELS = ("PAX A920", "Newland N910", "Landi A8", "Centerm K9", "Sunmi P2")


def generate(path: Path, *, terminals: int, merchants: int, transactions: int) -> None:
    """Write a registry file: every 10th terminal in stock, the rest bound.

    Written record by record, so that a million terminals never sit in this
    process's memory either.
    """
    from terminals import identifiers

    def merchant(n: int) -> dict:
        return {
            "merchant_id": identifiers.make_merchant_id(n),
            "uscc": identifiers.make_uscc(n),
            "name": f"基准测试商贸有限公司{n}",
            "legal_rep_name": "王芳",
            "legal_rep_id_number": identifiers.make_resident_id(n),
            "contact_email": f"merchant{n}@bench.example.com",
            "contact_phone": f"138{n % 100_000_000:08d}",
            "settlement_card_number": identifiers.make_bank_card(n),
            # Every 7th is an individual business, with money terms.
            **(
                {"kind": "individual", "service_fee_annual": "120.00"}
                if n % 7 == 0
                else {}
            ),
        }

    def terminal(n: int) -> dict:
        return {
            "serial_number": identifiers.make_serial_number(n),
            "terminal_id": identifiers.make_terminal_id(n),
            "model": MODELS[n % len(MODELS)],
            "kind": KINDS[n % len(KINDS)],
            "merchant_id": (
                None if n % 10 == 0 else identifiers.make_merchant_id(1 + n % merchants)
            ),
            **({"deposit": "299.00"} if n % 4 == 0 else {}),
        }

    def transaction(n: int) -> dict:
        return {
            "serial_number": identifiers.make_serial_number(
                1 + n // TRANSACTIONS_PER_TERMINAL
            ),
            "amount": f"{(n * 37) % 100_000 / 100:.2f}",
            "occurred_at": (
                f"2026-10-{1 + n % 28:02d}T{n % 24:02d}:"
                f"{n % 60:02d}:{(n * 7) % 60:02d}+08:00"
            ),
            "settled": n % 3 == 0,
        }

    sections = (
        ("merchants", merchant, range(1, merchants + 1)),
        ("terminals", terminal, range(1, terminals + 1)),
        ("transactions", transaction, range(transactions)),
    )
    with path.open("w", encoding="utf-8") as handle:
        handle.write("{")
        for position, (name, make, numbers) in enumerate(sections):
            handle.write(f'{", " if position else ""}"{name}": [')
            for count, n in enumerate(numbers):
                if count:
                    handle.write(", ")
                handle.write(json.dumps(make(n), ensure_ascii=False))
            handle.write("]")
        handle.write("}")


def backend_cpu_seconds(pid: int) -> float | None:
    """CPU time (user + system) of the PostgreSQL backend ``pid``, if readable."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_kib() -> int:
    """Peak resident memory of this process image, in KiB.

    Linux carries ``ru_maxrss`` over ``exec`` from the parent, so prefer the
    kernel's high-water mark of this process's own memory (VmHWM).
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def child(path: str) -> None:
    """Run one import in this process and print its figures as JSON."""
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        backend = cursor.fetchone()[0]
    profile = os.environ.get("BENCH_IMPORT_PROFILE")
    profiler = None
    if profile:
        from pyinstrument import Profiler

        profiler = Profiler()
    load_start = os.getloadavg()[0]
    before = resource.getrusage(resource.RUSAGE_SELF)
    backend_before = backend_cpu_seconds(backend)
    baseline = peak_rss_kib()
    started = time.perf_counter()
    if profiler:
        profiler.start()
    call_command("import_registry", path)
    if profiler:
        profiler.stop()
    seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_SELF)
    backend_after = backend_cpu_seconds(backend)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    if profiler:
        Path(profile).write_text(
            profiler.output_text(unicode=False, color=False, show_all=False)
        )
    print(
        json.dumps(
            {
                "seconds": seconds,
                "cpu_seconds": cpu,
                "pg_cpu_seconds": (
                    backend_after - backend_before
                    if backend_before is not None and backend_after is not None
                    else None
                ),
                "peak_kib": peak_rss_kib(),
                "baseline_kib": baseline,
                "load_start": load_start,
                "load": os.getloadavg()[0],
            }
        )
    )


def run_child(path: Path, profile: Path | None = None) -> dict:
    env = dict(os.environ)
    if profile:
        env["BENCH_IMPORT_PROFILE"] = str(profile)
    completed = subprocess.run(
        [sys.executable, __file__, "--child", str(path)],
        capture_output=True,
        text=True,
        check=False,
        env=env,
    )
    if completed.returncode:
        sys.exit(f"import failed:\n{completed.stdout}\n{completed.stderr}")
    lines = completed.stdout.strip().splitlines()
    print("\n".join(lines[:-1]))
    return json.loads(lines[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--terminals", type=int, default=100_000)
    parser.add_argument("--merchants", type=int, default=None)
    parser.add_argument("--transactions", type=int, default=None)
    parser.add_argument(
        "--file",
        type=Path,
        help="keep the registry file here (generated if missing, reused if present)",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        help="directory for pyinstrument profiles of both runs (slows them a little)",
    )
    parser.add_argument("--no-report", action="store_true")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    # The production settings want a key; DEBUG stays off so that Django does
    # not keep every query in memory.
    os.environ.setdefault("SECRET_KEY", "benchmark-only-key-not-secret-0123456789")
    if args.child:
        child(args.child)
        return

    url = os.environ.get("DATABASE_URL", "")
    if not url.startswith(("postgres://", "postgresql://")):
        sys.exit("set DATABASE_URL to a PostgreSQL database, e.g. .../unbinding_bench")
    merchants = args.merchants or max(1, args.terminals // 5)
    transactions = (
        args.transactions if args.transactions is not None else args.terminals // 2
    )
    database_create_if_missing(url)

    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection

    call_command("migrate", verbosity=0)
    with connection.cursor() as cursor:
        cursor.execute(
            "TRUNCATE terminals_transaction, terminals_binding, "
            "terminals_settlementbatch, terminals_terminal, terminals_merchant "
            "RESTART IDENTITY CASCADE"
        )
        # A clean start: no dead rows of an earlier run in the figures.
    connection.close()
    with psycopg_autocommit(url) as conn:
        conn.execute(
            "VACUUM ANALYZE terminals_transaction, terminals_binding, "
            "terminals_terminal, terminals_merchant"
        )

    with tempfile.TemporaryDirectory() as tmp:
        path = args.file or Path(tmp) / "registry.json"
        started = time.perf_counter()
        if not path.exists():
            generate(
                path,
                terminals=args.terminals,
                merchants=merchants,
                transactions=transactions,
            )
        generated = time.perf_counter() - started
        size_mib = path.stat().st_size / 2**20
        print(
            f"registry file: {args.terminals:,} terminals, {merchants:,} merchants, "
            f"{transactions:,} transactions ({size_mib:.1f} MiB) in {generated:.1f} s"
        )
        if args.profile:
            args.profile.mkdir(parents=True, exist_ok=True)
        first = run_child(path, args.profile and args.profile / "first.txt")
        print(f"first import: {first}")
        second = run_child(path, args.profile and args.profile / "second.txt")
        print(f"re-import: {second}")

    def mib(kib: int) -> str:
        return f"{kib / 1024:.0f} MiB"

    def pg(r: dict) -> str:
        return "?" if r["pg_cpu_seconds"] is None else f"{r['pg_cpu_seconds']:.1f} s"

    rows = [
        ("first import (empty registry)", first),
        ("re-import of the same file (all unchanged)", second),
    ]
    table = "\n".join(
        f"| {label} | {r['seconds']:.1f} s | {r['cpu_seconds']:.1f} s | {pg(r)} | "
        f"{mib(r['peak_kib'])} | {mib(r['baseline_kib'])} | "
        f"{r['load_start']:.1f} → {r['load']:.1f} |"
        for label, r in rows
    )
    body = f"""
Registry file: {args.terminals:,} terminals (every 10th in stock, the rest bound,
every 4th with a deposit), {merchants:,} merchants (every 7th an individual
business with an annual fee), {transactions:,} transactions; {size_mib:.1f} MiB of
JSON. Each run is `manage.py import_registry FILE` in a fresh process on
PostgreSQL; the time includes reading the JSON as a stream, checking every
record and writing.

| run | wall time | CPU of the importing process | CPU of its PostgreSQL backend | peak RSS | RSS before the import | load average (1 min) start → end |
|---|---|---|---|---|---|---|
{table}

Goals (issue 15): first import under 300 s with peak RSS under 400 MiB, the
re-import under 60 s. The machine has {os.cpu_count()} cores; wall time above
the two CPU columns is waiting for a core or for the disk.
"""
    print(body)
    if not args.no_report:
        from bench.report import write_section

        write_section("import", "Registry import", body)


def psycopg_autocommit(url: str):
    import psycopg

    return psycopg.connect(url, autocommit=True)


if __name__ == "__main__":
    main()
