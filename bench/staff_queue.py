"""Benchmark the staff queue in Django admin at 10,000 and 1,000,000 cases.

Usage::

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/unbinding_bench_queue \\
        .venv/bin/python bench/staff_queue.py [--small 10000] [--large 1000000]

Creates and migrates the database if needed, empties the case and registry
tables, then (with ``--reuse``: the small size in ``<database>_small``, the
large one in the database itself, each generated only when it does not hold
exactly that many cases yet, then measured):

1. generates ``--small`` cases directly in PostgreSQL (INSERT ... SELECT over
   generate_series: merchants, terminals, bindings, case terminals, document
   metadata without files, audit events), VACUUM ANALYZE, and measures every
   page of the queue as a Reviewer;
2. grows the same tables to ``--large`` cases and measures again.

Pages are requested in this process through Django's test ``Client`` with a
forced Reviewer login (the whole middleware stack and admin run; no network),
with DEBUG off and the production settings. Each page is requested 50 times
(after 3 warm-up requests); search terms and the case page vary over 50
different cases. The number of SQL queries is taken from one more request
under ``CaptureQueriesContext``; EXPLAIN (ANALYZE, BUFFERS) is run at the
large size on every query of each list, filter and search page that reads a
case or registry table. The API's case detail is measured the same way with
a read-only API key. Writes the ``queue`` section of docs/benchmarks.md.
"""

import argparse
import os
import random
import re
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
# Importable once ROOT is on sys.path (the script runs as bench/<name>.py).
from bench.report import database_create_if_missing  # noqa: E402

MERCHANTS = 100_000
REVIEWERS = 5
STOCK_TERMINALS = 1_000
# Terminal primary keys: case n names terminal n; every 10th case also names
# terminal EXTRA_BASE + n // 10; replacement devices come from STOCK_BASE + k.
EXTRA_BASE = 20_000_000
STOCK_BASE = 30_000_000
CHUNK = 100_000
REQUESTS = 50
WARMUP = 2
LIST_GOAL_MS = 100
SEARCH_GOAL_MS = 30
API_GOAL_MS = 15

CITIES = [
    "北京",
    "上海",
    "广州",
    "深圳",
    "杭州",
    "成都",
    "武汉",
    "南京",
    "西安",
    "重庆",
    "天津",
    "苏州",
    "长沙",
    "郑州",
    "青岛",
    "厦门",
    "宁波",
    "合肥",
    "福州",
    "昆明",
]
WORDS = [
    "恒达",
    "华信",
    "鑫源",
    "瑞丰",
    "永安",
    "金鼎",
    "宏图",
    "盛世",
    "新城",
    "东方",
    "博远",
    "嘉禾",
    "天成",
    "利民",
    "百川",
    "汇通",
    "开元",
    "中联",
    "鸿运",
    "安泰",
]

# State of case n: bucket (n * 7919) % 1000. A mature back office: most cases
# closed, about 12 % open, some of those past their review due date.
STATE_SQL = """CASE
  WHEN b < 700 THEN 'completed' WHEN b < 780 THEN 'rejected'
  WHEN b < 830 THEN 'withdrawn' WHEN b < 870 THEN 'expired'
  WHEN b < 880 THEN 'pending_verification' WHEN b < 920 THEN 'submitted'
  WHEN b < 955 THEN 'in_review' WHEN b < 965 THEN 'info_requested'
  WHEN b < 980 THEN 'awaiting_approval' WHEN b < 984 THEN 'approved'
  WHEN b < 986 THEN 'executing' ELSE 'failed' END"""
REASON_SQL = """CASE
  WHEN r < 35 THEN 'business_change' WHEN r < 60 THEN 'device_replacement'
  WHEN r < 70 THEN 'legal_compliance' WHEN r < 80 THEN 'data_migration'
  WHEN r < 95 THEN 'customer_request' ELSE 'other' END"""
OPEN_STATES = [
    "pending_verification",
    "submitted",
    "in_review",
    "info_requested",
    "awaiting_approval",
    "approved",
    "executing",
    "failed",
]
REVIEWED_STATES = [
    "in_review",
    "info_requested",
    "awaiting_approval",
    "approved",
    "executing",
    "completed",
    "failed",
    "rejected",
]

CASES_SQL = f"""
WITH base AS (
  SELECT n, (n * 7919) %% 1000 AS b, (n * 104729) %% 100 AS r,
         1 + (n * 7) %% %(merchants)s AS m
  FROM generate_series(%(lo)s::bigint, %(hi)s::bigint) AS n
), s AS (
  SELECT n, m, r, {STATE_SQL} AS state, {REASON_SQL} AS reason FROM base
), t AS (
  SELECT s.*,
    CASE
      WHEN state = 'pending_verification'
        THEN %(now)s - make_interval(hours => (n %% 24)::int)
      WHEN state IN ('submitted', 'in_review', 'info_requested',
                     'awaiting_approval', 'approved', 'executing', 'failed')
        -- Submitted in the last five days: about 40 %% are past due.
        THEN %(now)s - make_interval(mins => ((n * 31) %% 7200)::int) - interval '20 minutes'
      ELSE %(now)s - make_interval(days => (10 + (n * 37) %% 1800)::int,
                                   mins => (n %% 1440)::int)
    END AS created
  FROM s
)
INSERT INTO cases_case (
  id, reference, token_hash, token_salt, state, uscc, legal_rep_name,
  applicant_name, applicant_is_legal_rep, applicant_phone, applicant_email,
  reason, reason_detail, close_account, language, client_ip, code_hash,
  code_expires_at, code_attempts, code_sent_at, fees_statement, decision_note,
  failure_step, failure_reason, created_at, updated_at, submitted_at,
  review_due_at, approved_at, closed_at, assigned_to_id, recommended_by_id,
  approved_by_id, merchant_id, replacement_terminal_id, channel)
SELECT
  n,
  'UB-' || to_char(created, 'YYYY') || '-' || lpad(n::text, 7, '0'),
  md5('token' || n) || md5('hash' || n),
  md5('salt' || n),
  state, mc.uscc, mc.legal_rep_name, mc.legal_rep_name, true,
  mc.contact_phone, 'applicant' || n || '@bench.example.com',
  reason, CASE WHEN reason = 'other' THEN '门店搬迁' ELSE '' END,
  n %% 20 = 3, CASE WHEN n %% 5 = 0 THEN 'en' ELSE 'zh-hans' END,
  '10.0.0.1'::inet, md5('code' || n), created + interval '15 minutes', 0, created,
  '', '', CASE WHEN state = 'failed' THEN 'settle' ELSE '' END,
  CASE WHEN state = 'failed' THEN 'settlement service unavailable' ELSE '' END,
  created, created,
  CASE WHEN state IN ('pending_verification', 'expired') THEN NULL
       ELSE created + interval '20 minutes' END,
  CASE WHEN state IN ('pending_verification', 'expired') THEN NULL
       ELSE created + interval '20 minutes' + interval '3 days' END,
  CASE WHEN state IN ('approved', 'executing', 'completed', 'failed')
       THEN created + interval '2 days' END,
  CASE WHEN state IN ('completed', 'rejected', 'withdrawn')
         THEN created + make_interval(days => (1 + n %% 20)::int)
       WHEN state = 'expired' THEN created + interval '2 days' END,
  CASE WHEN state = ANY(%(reviewed)s) THEN (%(reviewers)s::int[])[1 + n %% {REVIEWERS}] END,
  CASE WHEN state IN ('awaiting_approval', 'approved', 'executing', 'completed', 'failed')
       THEN (%(reviewers)s::int[])[1 + n %% {REVIEWERS}] END,
  CASE WHEN state IN ('approved', 'executing', 'completed', 'failed')
       THEN %(approver)s::int END,
  m,
  CASE WHEN reason = 'device_replacement' AND n %% 3 = 0
       THEN {STOCK_BASE} + 1 + n %% {STOCK_TERMINALS} END,
  CASE WHEN n %% 10 = 7 THEN 'phone' WHEN n %% 25 = 9 THEN 'api' ELSE 'web' END
FROM t JOIN terminals_merchant mc ON mc.id = t.m
"""

# Terminals of the cases just inserted: one each, a second for every 10th case.
TERMINALS_SQL = f"""
INSERT INTO terminals_terminal (id, serial_number, terminal_id, model, kind, status,
                                created_at, updated_at, deposit_refund_condition)
SELECT id, 'SN' || lpad(id::text, 10, '0'), lpad(id::text, 8, '0'),
       (ARRAY['PAX A920', 'Newland N910', 'Landi A8', 'Centerm K9'])[1 + id %% 4],
       (ARRAY['magstripe', 'chip', 'mobile', 'smart', 'qr'])[1 + id %% 5],
       CASE WHEN state = 'completed' THEN 'unbound' ELSE 'active' END,
       created_at - interval '400 days', created_at, ''
FROM cases_case WHERE id BETWEEN %(lo)s AND %(hi)s
UNION ALL
SELECT {EXTRA_BASE} + id / 10, 'SX' || lpad((id / 10)::text, 10, '0'),
       'X' || lpad((id / 10)::text, 7, '0'), 'Sunmi P2', 'smart',
       CASE WHEN state = 'completed' THEN 'unbound' ELSE 'active' END,
       created_at - interval '400 days', created_at, ''
FROM cases_case WHERE id BETWEEN %(lo)s AND %(hi)s AND id %% 10 = 0
"""
CASE_TERMINALS_SQL = f"""
INSERT INTO cases_caseterminal (case_id, terminal_id, is_open, execution_status,
                                execution_error)
SELECT id, id, state = ANY(%(open)s),
       CASE WHEN state = 'completed' THEN 'done' ELSE 'pending' END, ''
FROM cases_case WHERE id BETWEEN %(lo)s AND %(hi)s
UNION ALL
SELECT id, {EXTRA_BASE} + id / 10, state = ANY(%(open)s),
       CASE WHEN state = 'completed' THEN 'done' ELSE 'pending' END, ''
FROM cases_case WHERE id BETWEEN %(lo)s AND %(hi)s AND id %% 10 = 0
"""
BINDINGS_SQL = """
INSERT INTO terminals_binding (terminal_id, merchant_id, started_at, ended_at, ended_reason)
SELECT ct.terminal_id, c.merchant_id, c.created_at - interval '400 days',
       CASE WHEN c.state = 'completed' THEN c.closed_at END,
       CASE WHEN c.state = 'completed' THEN 'case ' || c.reference ELSE '' END
FROM cases_caseterminal ct JOIN cases_case c ON c.id = ct.case_id
WHERE ct.case_id BETWEEN %(lo)s AND %(hi)s
"""
# Three documents always; contract and bank statement when closing the
# account; the transaction export once completed.
DOCUMENTS_SQL = """
INSERT INTO cases_document (case_id, kind, file, original_name, size, sha256,
  content_type, review_status, review_note, reviewed_at, uploaded_at, reviewed_by_id)
SELECT c.id, k.kind, 'cases/bench/' || c.id || '-' || k.i || '.pdf',
       k.kind || '.pdf', 150000 + (c.id * k.i) %% 100000,
       lpad(to_hex(c.id * 8 + k.i), 64, '0'),
       CASE WHEN k.kind = 'data_export' THEN 'text/csv' ELSE 'application/pdf' END,
       CASE WHEN c.state = ANY(%(reviewed)s) AND c.state <> 'in_review'
            THEN 'accepted' ELSE 'pending' END,
       '', CASE WHEN c.state = ANY(%(reviewed)s) THEN c.submitted_at + interval '1 day' END,
       c.created_at, CASE WHEN c.state = ANY(%(reviewed)s) THEN c.assigned_to_id END
FROM cases_case c
CROSS JOIN (VALUES (1, 'business_licence'), (2, 'legal_rep_id'), (3, 'device_evidence'),
                   (4, 'contract'), (5, 'bank_statement'), (6, 'data_export')) AS k(i, kind)
WHERE c.id BETWEEN %(lo)s AND %(hi)s
  AND (k.i <= 3 OR (k.i IN (4, 5) AND c.close_account)
       OR (k.i = 6 AND c.state = 'completed'))
"""
# Filed, code sent, verified, review started, closed: as far as the state got.
EVENTS_SQL = """
INSERT INTO cases_caseevent (case_id, type, actor_kind, actor_label, from_state,
  to_state, transition, note, payload, visible_to_merchant, client_ip, created_at, actor_id)
SELECT c.id, e.type, e.actor_kind,
       CASE WHEN e.actor_kind = 'staff' THEN 'reviewer' ELSE '' END,
       e.from_state, CASE WHEN e.i = 5 THEN c.state ELSE e.to_state END,
       CASE WHEN e.i = 5 THEN 'close' ELSE e.transition END, '', '{}'::jsonb,
       e.i <> 2, NULL, c.created_at + make_interval(mins => e.i * 10),
       CASE WHEN e.actor_kind = 'staff' THEN c.assigned_to_id END
FROM cases_case c
CROSS JOIN (VALUES
  (1, 'filed', 'merchant', '', '', ''),
  (2, 'code_sent', 'system', '', '', ''),
  (3, 'transition', 'merchant', 'pending_verification', 'submitted', 'verify'),
  (4, 'transition', 'staff', 'submitted', 'in_review', 'start_review'),
  (5, 'transition', 'staff', 'in_review', '', '')
) AS e(i, type, actor_kind, from_state, to_state, transition)
WHERE c.id BETWEEN %(lo)s AND %(hi)s
  AND (e.i <= 2
       OR (e.i = 3 AND c.submitted_at IS NOT NULL)
       OR (e.i = 4 AND c.state = ANY(%(reviewed)s))
       OR (e.i = 5 AND c.state IN ('completed', 'rejected', 'withdrawn')))
"""

LOADED_TABLES = (
    "cases_case",
    "cases_caseterminal",
    "cases_document",
    "cases_caseevent",
    "terminals_terminal",
    "terminals_binding",
)


# --- data ---------------------------------------------------------------------------


def reset_and_seed(*, now) -> dict:
    """Empty the tables; create staff users, merchants and stock terminals."""
    from django.contrib.auth.models import Group, User
    from django.db import connection

    from terminals import identifiers

    with connection.cursor() as cursor:
        cursor.execute(
            "TRUNCATE cases_caseevent, cases_document, cases_caseterminal, "
            "cases_notification, cases_executionstep, cases_case, "
            "terminals_transaction, terminals_binding, terminals_settlementbatch, "
            "terminals_terminal, terminals_merchant, django_session "
            "RESTART IDENTITY CASCADE"
        )
    User.objects.filter(username__startswith="bench-").delete()
    reviewer_group = Group.objects.get(name="Reviewer")
    approver_group = Group.objects.get(name="Approver")
    reviewers = []
    for i in range(1, REVIEWERS + 1):
        user = User.objects.create_user(
            f"bench-reviewer-{i}", password=None, is_staff=True
        )
        user.groups.add(reviewer_group)
        reviewers.append(user.pk)
    approver = User.objects.create_user("bench-approver", password=None, is_staff=True)
    approver.groups.add(approver_group)

    started = time.perf_counter()
    with (
        connection.cursor() as cursor,
        cursor.copy(
            "COPY terminals_merchant (id, merchant_id, uscc, name, legal_rep_name, "
            "legal_rep_id_number, contact_email, contact_phone, settlement_card_number, "
            "status, created_at, updated_at, kind, deposit_refund_condition) "
            "FROM STDIN"
        ) as copy,
    ):
        for n in range(1, MERCHANTS + 1):
            name = (
                f"{CITIES[n % len(CITIES)]}{WORDS[(n // len(CITIES)) % len(WORDS)]}"
                f"商贸有限公司{n}"
            )
            copy.write_row(
                (
                    n,
                    identifiers.make_merchant_id(n),
                    identifiers.make_uscc(n),
                    name,
                    "王芳",
                    identifiers.make_resident_id(n),
                    f"merchant{n}@bench.example.com",
                    f"138{n % 100_000_000:08d}",
                    identifiers.make_bank_card(n),
                    "active",
                    now,
                    now,
                    "enterprise",
                    "",
                )
            )
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO terminals_terminal (id, serial_number, terminal_id, model, "
            "kind, status, created_at, updated_at, deposit_refund_condition) "
            "SELECT %s + k, 'SR' || lpad(k::text, 10, '0'), 'R' || lpad(k::text, 7, '0'), "
            "'PAX A920', 'smart', 'in_stock', %s, %s, '' "
            "FROM generate_series(1, %s) AS k",
            [STOCK_BASE, now, now, STOCK_TERMINALS],
        )
    print(f"seeded {MERCHANTS:,} merchants in {time.perf_counter() - started:.1f} s")
    return {"reviewers": reviewers, "approver": approver.pk}


def _droppable_indexes(cursor) -> list[tuple[str, str]]:
    """Secondary indexes of the loaded tables that no constraint owns."""
    cursor.execute(
        """
        SELECT i.indexname, i.indexdef FROM pg_indexes i
        WHERE i.schemaname = 'public' AND i.tablename = ANY(%s)
          AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conname = i.indexname)
        ORDER BY i.tablename, i.indexname
        """,
        [list(LOADED_TABLES)],
    )
    return cursor.fetchall()


def grow(*, lo: int, hi: int, now, users: dict) -> float:
    """Insert cases ``lo``..``hi`` with everything around them; return seconds.

    The usual bulk-load recipe: secondary indexes are dropped and rebuilt once
    afterwards (exactly as the migrations define them), foreign-key triggers
    are skipped (rows are consistent by construction), commits are chunked.
    """
    from django.db import connection, transaction

    params = {
        "merchants": MERCHANTS,
        "now": now,
        "reviewers": users["reviewers"],
        "approver": users["approver"],
        "reviewed": REVIEWED_STATES,
        "open": OPEN_STATES,
    }
    started = time.perf_counter()
    with connection.cursor() as cursor:
        indexes = _droppable_indexes(cursor)
        for name, _definition in indexes:
            cursor.execute(f'DROP INDEX "{name}"')
        cursor.execute("SET session_replication_role = replica")
        cursor.execute("SET synchronous_commit = off")
    try:
        for start in range(lo, hi + 1, CHUNK):
            end = min(hi, start + CHUNK - 1)
            chunk = {**params, "lo": start, "hi": end}
            with transaction.atomic(), connection.cursor() as cursor:
                for sql in (
                    CASES_SQL,
                    TERMINALS_SQL,
                    CASE_TERMINALS_SQL,
                    BINDINGS_SQL,
                    DOCUMENTS_SQL,
                    EVENTS_SQL,
                ):
                    cursor.execute(sql, chunk)
            print(
                f"  cases {start:,}–{end:,} loaded "
                f"({time.perf_counter() - started:.0f} s)",
                flush=True,
            )
    finally:
        with connection.cursor() as cursor:
            cursor.execute("SET session_replication_role = DEFAULT")
            cursor.execute("SET maintenance_work_mem = '512MB'")
            rebuild = time.perf_counter()
            for _name, definition in indexes:
                cursor.execute(definition)
            print(
                f"  {len(indexes)} indexes rebuilt in "
                f"{time.perf_counter() - rebuild:.0f} s",
                flush=True,
            )
    with connection.cursor() as cursor:
        for table in LOADED_TABLES:
            cursor.execute(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                f"(SELECT coalesce(max(id), 1) FROM {table}))"
            )
        vacuum = time.perf_counter()
        for table in LOADED_TABLES:
            cursor.execute(f"VACUUM (ANALYZE) {table}")
        cursor.execute("ANALYZE terminals_merchant")
        print(f"  VACUUM ANALYZE in {time.perf_counter() - vacuum:.0f} s", flush=True)
    return time.perf_counter() - started


def table_counts() -> dict[str, int]:
    from django.db import connection

    counts = {}
    with connection.cursor() as cursor:
        for table in (*LOADED_TABLES, "terminals_merchant"):
            cursor.execute(f"SELECT count(*) FROM {table}")
            counts[table] = cursor.fetchone()[0]
    return counts


# --- measuring ----------------------------------------------------------------------


@dataclass
class Page:
    key: str
    label: str
    kind: str  # list | search | page | api
    urls: list[str]
    # Text each response must contain (per URL), to prove it found the case.
    expect: list[str] = field(default_factory=list)
    explain: bool = True
    # Request headers (the API key of the API pages).
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Result:
    page: Page
    p50: float
    p95: float
    cpu: float
    sql_ms: float
    queries: int
    sql: list[str]


def pages(*, reviewer, rng: random.Random) -> list[Page]:
    """The pages to measure, with 50 different targets for searches and case pages."""
    from django.db import connection

    base = "/admin/cases/case/"
    with connection.cursor() as cursor:
        cursor.execute("SELECT max(id) FROM cases_case")
        top = cursor.fetchone()[0]
        ids = rng.sample(range(1, top + 1), REQUESTS)
        cursor.execute(
            "SELECT c.id, c.reference, m.merchant_id, t.serial_number, m.name "
            "FROM cases_case c JOIN terminals_merchant m ON m.id = c.merchant_id "
            "JOIN terminals_terminal t ON t.id = c.id WHERE c.id = ANY(%s)",
            [ids],
        )
        targets = cursor.fetchall()
        cursor.execute(
            "SELECT id FROM cases_case WHERE assigned_to_id = %s AND state = 'in_review' "
            "ORDER BY id LIMIT %s",
            [reviewer.pk, REQUESTS],
        )
        own = [row[0] for row in cursor.fetchall()]

    def q(**params) -> str:
        return f"{base}?{urlencode(params)}"

    def repeat(url: str) -> list[str]:
        return [url] * REQUESTS

    # The API's case detail, with a read-only key of its own for this run.
    from api.services import api_key_create

    _api_key, key = api_key_create(
        name=f"bench-queue-{rng.randrange(10**9)}", scopes=["cases:read"]
    )
    api = {"HTTP_AUTHORIZATION": f"Api-Key {key}"}

    # A merchant name without its number: shared with about 250 merchants.
    prefix = [re.sub(r"商贸有限公司\d+$", "", t[4]) for t in targets]
    return [
        Page("list", "case list, unfiltered", "list", repeat(base)),
        Page(
            "state",
            "filter: state = submitted",
            "list",
            repeat(q(state__exact="submitted")),
        ),
        Page(
            "state_completed",
            "filter: state = completed (largest state)",
            "list",
            repeat(q(state__exact="completed")),
        ),
        Page(
            "reason",
            "filter: reason = device replacement",
            "list",
            repeat(q(reason__exact="device_replacement")),
        ),
        Page("overdue", "filter: overdue", "list", repeat(q(overdue="yes"))),
        Page("mine", "filter: assigned to me", "list", repeat(q(assignee="me"))),
        Page("unassigned", "filter: unassigned", "list", repeat(q(assignee="none"))),
        Page(
            "close_account",
            "filter: close account",
            "list",
            repeat(q(close_account__exact="1")),
        ),
        Page(
            "channel",
            "filter: channel = phone",
            "list",
            repeat(q(channel__exact="phone")),
        ),
        Page(
            "replacement",
            "filter: with replacement",
            "list",
            repeat(q(replacement="yes")),
        ),
        Page(
            "search_reference",
            "search: reference",
            "search",
            [q(q=t[1]) for t in targets],
            [t[1] for t in targets],
        ),
        Page(
            "search_merchant",
            "search: merchant number",
            "search",
            [q(q=t[2]) for t in targets],
            [t[1] for t in targets],
        ),
        Page(
            "search_serial",
            "search: serial number",
            "search",
            [q(q=t[3]) for t in targets],
            [t[1] for t in targets],
        ),
        Page(
            "search_name",
            "search: merchant name prefix (≈250 merchants)",
            "search",
            [q(q=p) for p in prefix],
            [],
        ),
        Page(
            "change",
            "one case page (in review, assigned to me)",
            "page",
            [f"{base}{pk}/change/" for pk in (own * REQUESTS)[:REQUESTS]],
            explain=False,
        ),
        Page(
            "dashboard",
            "admin index with the case dashboard",
            "page",
            repeat("/admin/"),
            explain=False,
        ),
        Page(
            "api_case",
            "API: case detail (GET /api/v1/cases/<reference>/)",
            "api",
            [f"/api/v1/cases/{t[1]}/" for t in targets],
            [f'"reference":"{t[1]}"' for t in targets],
            explain=False,
            headers=api,
        ),
    ]


def measure(client, page: Page) -> Result:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    for url in page.urls[:WARMUP]:
        client.get(url, **page.headers)
    timings, cpu = [], []
    for i, url in enumerate(page.urls):
        started, cpu_started = time.perf_counter(), time.process_time()
        response = client.get(url, **page.headers)
        elapsed = (time.perf_counter() - started) * 1000
        cpu.append((time.process_time() - cpu_started) * 1000)
        if response.status_code != 200:
            sys.exit(f"{url}: HTTP {response.status_code}")
        if page.expect and page.expect[i] not in response.content.decode():
            sys.exit(f"{url}: {page.expect[i]} not in the page")
        timings.append(elapsed)
    with CaptureQueriesContext(connection) as captured:
        client.get(page.urls[0], **page.headers)
    timings.sort()
    return Result(
        page=page,
        p50=statistics.median(timings),
        p95=timings[int(len(timings) * 0.95) - 1],
        cpu=statistics.median(cpu),
        sql_ms=sum(float(q["time"]) for q in captured.captured_queries) * 1000,
        queries=len(captured.captured_queries),
        sql=[q["sql"] for q in captured.captured_queries],
    )


def login(client, user) -> None:
    """Give ``client`` a real database session for ``user``.

    What a successful admin login stores, without the login signal:
    ``force_login`` builds a request without a client address, which the
    login lockout's access log cannot store.
    """
    from importlib import import_module

    from django.conf import settings
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY

    session = import_module(settings.SESSION_ENGINE).SessionStore()
    session[SESSION_KEY] = str(user.pk)
    session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
    session[HASH_SESSION_KEY] = user.get_session_auth_hash()
    session.save()
    client.cookies[settings.SESSION_COOKIE_NAME] = session.session_key


def measure_all(*, reviewer, seed: int) -> list[Result]:
    from django.test import Client

    client = Client()
    login(client, reviewer)
    results = []
    for page in pages(reviewer=reviewer, rng=random.Random(seed)):
        result = measure(client, page)
        print(
            f"  {page.label:55} p50 {result.p50:7.1f} ms  p95 {result.p95:7.1f} ms  "
            f"cpu {result.cpu:6.1f} ms  sql {result.sql_ms:6.1f} ms  "
            f"{result.queries} queries",
            flush=True,
        )
        results.append(result)
    return results


# Queries that only serve the session, the user and the admin chrome.
_CHROME = re.compile(
    r'FROM "(django_session|auth_user|auth_group|auth_permission|django_content_type)"'
)


def explain(sql: str) -> str:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) {sql}")
        lines = [row[0] for row in cursor.fetchall()]
    return "\n".join(lines)


def _trim(plan: str, limit: int = 18) -> str:
    lines = [line for line in plan.splitlines() if "Planning:" not in line]
    if len(lines) > limit:
        lines = [*lines[: limit - 2], "  …", lines[-1]]
    return "\n".join(lines)


def _short_sql(sql: str, limit: int = 220) -> str:
    sql = re.sub(r"SELECT .*? FROM", "SELECT … FROM", sql, count=1, flags=re.S)
    return sql if len(sql) <= limit else sql[:limit] + " …"


def plans(results: list[Result]) -> tuple[str, list[str]]:
    """EXPLAIN every case/registry query of the list, filter and search pages."""
    blocks, seq_scans = [], []
    for result in results:
        if not result.page.explain:
            continue
        parts = []
        for sql in result.sql:
            if _CHROME.search(sql) or not sql.lstrip().upper().startswith("SELECT"):
                continue
            if "FROM pg_class" in sql:
                parts.append(
                    f"-- {_short_sql(sql)}\n(planner statistics, no table read)"
                )
                continue
            plan = explain(sql)
            for match in re.finditer(r"Seq Scan on (\w+)", plan):
                if match.group(1) not in ("auth_user", "auth_group"):
                    seq_scans.append(f"{result.page.label}: {match.group(0)}")
            parts.append(f"-- {_short_sql(sql)}\n{_trim(plan)}")
        blocks.append(
            f"<details><summary>{result.page.label}</summary>\n\n```\n"
            + "\n\n".join(parts)
            + "\n```\n</details>"
        )
    return "\n\n".join(blocks), seq_scans


# --- report -------------------------------------------------------------------------


def _goal(result: Result) -> tuple[int | None, bool | None]:
    if result.page.kind == "list":
        return LIST_GOAL_MS, result.p95 <= LIST_GOAL_MS
    if result.page.kind == "search":
        return SEARCH_GOAL_MS, result.p95 <= SEARCH_GOAL_MS
    if result.page.kind == "api":
        return API_GOAL_MS, result.p95 <= API_GOAL_MS
    return None, None


def _seconds(value: float | None) -> str:
    return "kept from an earlier run (`--reuse`)" if value is None else f"{value:.0f} s"


def report(
    *,
    small: list[Result],
    large: list[Result],
    sizes: dict,
    timing: dict,
    plan_text: str,
    seq_scans: list[str],
    loads: str,
) -> str:
    rows, missed = [], []
    for a, b in zip(small, large, strict=True):
        goal, ok = _goal(b)
        goal_text = (
            "—" if goal is None else f"p95 ≤ {goal} ms: {'met' if ok else '**missed**'}"
        )
        same = "same" if a.queries == b.queries else "**differs**"
        rows.append(
            f"| {b.page.label} | {a.p50:.1f} / {a.p95:.1f} | {b.p50:.1f} / {b.p95:.1f} | "
            f"{b.cpu:.0f} | {b.sql_ms:.1f} | "
            f"{a.queries} / {b.queries} ({same}) | {goal_text} |"
        )
        if ok is False:
            missed.append(f"{b.page.label}: p95 {b.p95:.1f} ms > {goal} ms")
        if a.queries != b.queries:
            missed.append(
                f"{b.page.label}: {a.queries} queries at the small size, {b.queries} at the large"
            )
    counts = "\n".join(
        f"| {table} | {sizes['small'][table]:,} | {sizes['large'][table]:,} |"
        for table in sizes["large"]
    )
    goals = (
        "All goals met: every list and filter p95 ≤ 100 ms, every search p95 ≤ 30 ms, "
        "the same number of queries at both sizes."
        if not missed
        else "Goals missed:\n\n" + "\n".join(f"- {m}" for m in missed)
    )
    scans = (
        "No sequential scan of a case or registry table in any plan below."
        if not seq_scans
        else "Sequential scans found:\n\n" + "\n".join(f"- {s}" for s in seq_scans)
    )
    return f"""
Generated directly in PostgreSQL (INSERT … SELECT over generate_series; secondary
indexes dropped during the load and rebuilt from their migration definitions,
then VACUUM ANALYZE): {_seconds(timing["small"])} for the small size, then
{_seconds(timing["large"])} for the large size (target: under 10 minutes).
Distribution: 70 % completed, 8 % rejected, 5 % withdrawn, 4 % expired, about
12 % open (4 % submitted, 3.5 % in review, 1.5 % awaiting approval, …; about
40 % of the cases waiting on staff are past their review due date); reasons
35/25/10/10/15/5 %; 5 % close the account; a third of device replacements name
a replacement device; 5 reviewers; {MERCHANTS:,} merchants; every 10th case has two
terminals; 3 to 6 documents (metadata only) and 2 to 5 events per case.

| table | small | large |
|---|---|---|
{counts}

Measured in-process with Django's test `Client`, logged in as a user of the
Reviewer group (a real database session, as the admin login stores it), DEBUG off, the
product's settings on PostgreSQL (`bench.ceiling.settings`: only the static
files storage is the plain one, see the intake section).
Each page {REQUESTS} times after {WARMUP} warm-ups; the searches and the case page
use {REQUESTS} different cases. Times are the whole request: middleware, admin,
queries and template rendering. Queries counted with `CaptureQueriesContext`.

Load average of the machine while measuring (other work was running on it):
{loads}. "CPU" is the Django process's own CPU time per request (median, large
size): the part of the wall time that no database index can remove. "SQL" is
the total time of that page's queries at the large size (one request).

| page | small: p50 / p95 ms | large: p50 / p95 ms | CPU ms | SQL ms | queries small / large | goal (large) |
|---|---|---|---|---|---|---|
{chr(10).join(rows)}

{goals}

### Plans at the large size

`EXPLAIN (ANALYZE, BUFFERS)` of every query of each list, filter and search page
that reads a case or registry table (session and user lookups left out), trimmed.
{scans}

{plan_text}
"""


def use_database(name: str) -> None:
    """Point Django's default connection at database ``name`` (same server)."""
    from django.db import connections

    connection = connections["default"]
    connection.close()
    connection.settings_dict["NAME"] = name


def kept_users(cases: int) -> dict | None:
    """The bench users of a database that already holds exactly ``cases`` cases."""
    from django.contrib.auth.models import User
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM cases_case")
        if cursor.fetchone()[0] != cases:
            return None
    reviewers = list(
        User.objects.filter(username__startswith="bench-reviewer-")
        .order_by("username")
        .values_list("pk", flat=True)
    )
    approver = User.objects.filter(username="bench-approver").first()
    if len(reviewers) != REVIEWERS or approver is None:
        return None
    return {"reviewers": reviewers, "approver": approver.pk}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=int, default=10_000)
    parser.add_argument("--large", type=int, default=1_000_000)
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="keep the generated data between runs: the small size lives in "
        "<database>_small, the large one in the database of DATABASE_URL; each "
        "is generated only when it does not already hold exactly that many "
        "cases (the 1M load takes minutes, measuring takes seconds)",
    )
    parser.add_argument("--no-report", action="store_true")
    args = parser.parse_args()

    # The product's settings; only the static files storage differs (see there).
    os.environ["DJANGO_SETTINGS_MODULE"] = "bench.ceiling.settings"
    os.environ.setdefault("SECRET_KEY", "benchmark-only-key-not-secret-0123456789")
    os.environ["DEBUG"] = "0"
    os.environ["ALLOWED_HOSTS"] = "testserver"
    os.environ["SECURE_SSL_REDIRECT"] = "0"
    url = os.environ.get("DATABASE_URL", "")
    if not url.startswith(("postgres://", "postgresql://")):
        sys.exit(
            "set DATABASE_URL to a PostgreSQL database, e.g. .../unbinding_bench_queue"
        )
    database_create_if_missing(url)
    large_name = url.rsplit("/", 1)[1].split("?")[0]
    small_name = f"{large_name}_small"
    if args.reuse:
        database_create_if_missing(url.replace(f"/{large_name}", f"/{small_name}"))

    import django

    django.setup()
    from django.contrib.auth.models import User
    from django.core.management import call_command
    from django.utils import timezone

    timing, sizes, results, loads = {}, {}, {}, []
    users = None
    for label, lo, hi in (
        ("small", 1, args.small),
        ("large", args.small + 1, args.large),
    ):
        if args.reuse:
            use_database(small_name if label == "small" else large_name)
            call_command("migrate", verbosity=0)
            users = kept_users(hi)
            if users is None:
                users = reset_and_seed(now=timezone.now())
                print(f"generating cases 1–{hi:,}", flush=True)
                timing[label] = grow(lo=1, hi=hi, now=timezone.now(), users=users)
            else:
                print(f"reusing the {hi:,} cases already generated", flush=True)
                timing[label] = None
        else:
            if users is None:
                call_command("migrate", verbosity=0)
                now = timezone.now()
                users = reset_and_seed(now=now)
            print(f"generating cases {lo:,}–{hi:,}", flush=True)
            timing[label] = grow(lo=lo, hi=hi, now=now, users=users)
        reviewer = User.objects.get(pk=users["reviewers"][0])
        sizes[label] = table_counts()
        print(f"measuring at {hi:,} cases", flush=True)
        before = os.getloadavg()[0]
        results[label] = measure_all(reviewer=reviewer, seed=hi)
        loads.append(f"{before:.1f}–{os.getloadavg()[0]:.1f} at {hi:,} cases")
    plan_text, seq_scans = plans(results["large"])
    body = report(
        small=results["small"],
        large=results["large"],
        sizes=sizes,
        timing=timing,
        plan_text=plan_text,
        seq_scans=seq_scans,
        loads=", ".join(loads),
    )
    print(body)
    if not args.no_report:
        from bench.report import write_section

        write_section(
            "queue",
            f"Staff queue at {args.small:,} and {args.large:,} cases",
            body,
        )


if __name__ == "__main__":
    main()
