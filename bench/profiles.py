"""Profiles (pyinstrument) behind the goals docs/benchmarks.md reports as missed.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/unbinding_bench_queue \\
        .venv/bin/python bench/profiles.py

1. The staff queue: ten renders of the unfiltered case list as a reviewer, on the
   database bench/staff_queue.py filled (1M cases) — where the CPU per page goes.
2. Execution: 30 approved cases executed in process (``case_execute``) on the
   same database — where the time per case goes.
Writes the "profiles" section of docs/benchmarks.md.
"""

import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TOP_LINES = 45
QUEUE_RENDERS = 10
EXECUTIONS = 30


def _trim(text: str) -> str:
    return "\n".join(text.splitlines()[:TOP_LINES])


def profile_queue(reviewer) -> str:
    from django.test import Client
    from pyinstrument import Profiler

    from bench.staff_queue import login

    client = Client()
    login(client, reviewer)
    client.get("/admin/cases/case/")  # warm caches
    profiler = Profiler(interval=0.0005)
    started = time.perf_counter()
    with profiler:
        for _ in range(QUEUE_RENDERS):
            assert client.get("/admin/cases/case/").status_code == 200
    per_page = (time.perf_counter() - started) * 1000 / QUEUE_RENDERS
    return per_page, profiler.output_text(unicode=True, color=False, show_all=False)


def profile_execution() -> tuple[float, str]:
    # The queue benchmark inserted rows with explicit ids: move the sequences
    # past them, and start the factories' numbers far from its identifiers.
    from io import StringIO

    from django.core.management import call_command
    from django.db import connection
    from pyinstrument import Profiler

    from cases.models import CaseState
    from cases.services.execution import case_execute
    from tests import factories

    sql = StringIO()
    call_command(
        "sqlsequencereset", "terminals", "cases", "auth", stdout=sql, no_color=True
    )
    with connection.cursor() as cursor:
        cursor.execute(sql.getvalue())
        cursor.execute(
            "SELECT max(merchant_id::bigint) - 898000000000000 FROM terminals_merchant"
            " WHERE merchant_id LIKE '898%%'"
        )
        merchants = cursor.fetchone()[0] or 0
        cursor.execute(
            "SELECT max(substr(serial_number, 3)::bigint) FROM terminals_terminal"
            " WHERE serial_number ~ '^SN[0-9]{10}$'"
        )
        serials = cursor.fetchone()[0] or 0
    start = max(merchants, serials, 20_000_000) + 1
    for factory in (
        factories.MerchantFactory,
        factories.TerminalFactory,
        factories.CaseFactory,
        factories.UserFactory,
    ):
        factory.reset_sequence(start)
    cases = [factories.CaseFactory(state=CaseState.APPROVED) for _ in range(EXECUTIONS)]
    profiler = Profiler(interval=0.0005)
    started = time.perf_counter()
    with profiler:
        for case in cases:
            case_execute(case_id=case.pk)
    per_case = (time.perf_counter() - started) * 1000 / EXECUTIONS
    return per_case, profiler.output_text(unicode=True, color=False, show_all=False)


def main() -> None:
    os.environ["DJANGO_SETTINGS_MODULE"] = "bench.ceiling.settings"
    os.environ.setdefault("SECRET_KEY", "benchmark-only-key-not-secret-0123456789")
    os.environ["DEBUG"] = "0"
    os.environ["ALLOWED_HOSTS"] = "testserver"
    os.environ["SECURE_SSL_REDIRECT"] = "0"
    os.environ.setdefault("EMAIL_URL", "dummymail://")
    if not os.environ.get("DATABASE_URL", "").startswith(
        ("postgres://", "postgresql://")
    ):
        sys.exit("set DATABASE_URL to the PostgreSQL database of bench/staff_queue.py")

    import django

    django.setup()
    from django.contrib.auth.models import Group, User
    from django.db import connection

    from bench.report import write_section

    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM cases_case")
        cases = cursor.fetchone()[0]
    reviewer, _ = User.objects.get_or_create(
        username="profile-reviewer", defaults={"is_staff": True}
    )
    reviewer.groups.add(Group.objects.get(name="Reviewer"))

    page_ms, queue_profile = profile_queue(reviewer)
    case_ms, execution_profile = profile_execution()
    print(queue_profile)
    print(execution_profile)
    body = f"""Profiles behind the missed goals, taken in process on the queue benchmark's
database ({cases:,} cases) with pyinstrument.

**Staff queue** — unfiltered case list as a reviewer, {QUEUE_RENDERS} renders:
{page_ms:.0f} ms per page wall. About a third is `lookup_field` — the admin calling
the per-row display methods (`state_badge` → `get_state_display`, `age` →
`timesince`, `review_due` → local time formatting) for 100 rows — and most of
the rest is template rendering; SQL is a small share. Plan: `list_per_page = 25`,
precomputed badge labels per state, a plain date instead of `timesince`, and
caching the per-request group/OTP device lookups (`has_permission`).

```
{_trim(queue_profile)}
```

**Execution** — {EXECUTIONS} approved cases run through `case_execute` in process:
{case_ms:.0f} ms per case wall. In process the completion e-mails are sent eagerly
at commit (`run_and_clear_commit_hooks` → `notification_send`); on a real worker
they go to the `notifications` queue, so the execution worker's own cost is the
rest: the seven step transactions (each a commit round trip), the export and the
settlement. Plan (see "Execution throughput"): an opt-in asynchronous commit for
the step transactions, fewer round trips in settle/export, more processes.

```
{_trim(execution_profile)}
```
"""
    write_section("profiles", "Profiles of the missed goals", body)


if __name__ == "__main__":
    main()
