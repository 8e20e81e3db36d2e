"""Backup and restore: scripts/backup.sh, then scripts/restore.sh into a NEW
database and directory, and every case, event and document found again."""

import hashlib
import os
import secrets
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from django.core import mail
from django.test import Client
from django.urls import reverse

from cases.models import Case, CaseEvent, CaseState, Document, Notification
from cases.services.review import case_transition
from terminals.models import Binding
from tests import factories
from tests.faults.harness import filing_form, review_to_approval
from tests.integration.harness import database_url

pytestmark = [
    pytest.mark.integration,
    pytest.mark.django_db(transaction=True),
    pytest.mark.timeout(120),
]

ROOT = Path(__file__).resolve().parents[2]


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def url_with_database(url: str, name: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path=f"/{name}"))


@pytest.fixture
def restored_url() -> str:
    """The URL of a database that does not exist yet; dropped afterwards."""
    name = f"restore_check_{secrets.token_hex(4)}"
    url = url_with_database(database_url(), name)
    yield url
    with psycopg.connect(
        url_with_database(database_url(), "postgres"), autocommit=True
    ) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def cases_with_documents_and_events(reviewer, approver) -> None:
    """Three cases filed through the form; one of them verified and executed."""
    client = Client()
    for _ in range(3):
        merchant = factories.MerchantFactory()
        terminals = [factories.BindingFactory(merchant=merchant).terminal]
        factories.TransactionFactory(terminal=terminals[0])
        response = client.post(
            reverse("cases:new"),
            filing_form(merchant, terminals, key=secrets.token_hex(16)),
        )
        assert response.status_code == 302
    case = Case.objects.order_by("pk").first()
    code = next(
        word
        for line in mail.outbox[0].body.splitlines()
        for word in line.split()
        if len(word) == 6 and word.isdigit()
    )
    response = client.post(case.get_tracking_path() + "verify/", {"code": code})
    assert response.status_code == 302
    review_to_approval(case, reviewer=reviewer)
    case_transition(case_id=case.pk, name="approve", actor=approver)
    case.refresh_from_db()
    assert case.state == CaseState.COMPLETED  # executed in-process (eager)


def run(command: list[str], **env) -> str:
    result = subprocess.run(
        command,
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_backup_restored_into_a_new_database_finds_every_case_event_and_file(
    media_root, tmp_path, restored_url, reviewer, approver
):
    """Back up, restore into a new database and directory, compare row by row.

    Lost: nothing. Every case, event, document, notice and binding is in the
    restored database, and every document's file is in the restored
    directory with the SHA-256 recorded for it (and of the original file).
    """
    # given
    cases_with_documents_and_events(reviewer, approver)
    backup = tmp_path / "backup"
    restored_media = tmp_path / "restored-documents"

    # when
    run(
        ["scripts/backup.sh", str(backup)],
        DATABASE_URL=database_url(),
        MEDIA_ROOT=str(media_root),
    )
    checked = run(
        ["scripts/restore.sh", str(backup), restored_url, str(restored_media)],
        DJANGO_SETTINGS_MODULE="config.settings_test",
        PYTHON=sys.executable,
    )

    # then: the same rows
    with psycopg.connect(restored_url) as conn:

        def rows(sql: str) -> list[tuple]:
            return [tuple(row) for row in conn.execute(sql).fetchall()]

        assert rows(
            "SELECT id, reference, state, token_hash FROM cases_case ORDER BY id"
        ) == list(
            Case.objects.order_by("pk").values_list(
                "pk", "reference", "state", "token_hash"
            )
        )
        assert rows(
            "SELECT id, case_id, type, transition, to_state, created_at "
            "FROM cases_caseevent ORDER BY id"
        ) == list(
            CaseEvent.objects.order_by("pk").values_list(
                "pk", "case_id", "type", "transition", "to_state", "created_at"
            )
        )
        documents = rows(
            "SELECT id, case_id, kind, file, sha256 FROM cases_document ORDER BY id"
        )
        assert documents == list(
            Document.objects.order_by("pk").values_list(
                "pk", "case_id", "kind", "file", "sha256"
            )
        )
        assert rows("SELECT id, status FROM cases_notification ORDER BY id") == list(
            Notification.objects.order_by("pk").values_list("pk", "status")
        )
        assert rows("SELECT id, ended_at FROM terminals_binding ORDER BY id") == list(
            Binding.objects.order_by("pk").values_list("pk", "ended_at")
        )

    # then: every document's file, byte for byte
    kinds = {kind for _pk, _case, kind, _file, _sha in documents}
    assert len(documents) == 3 * 4 + 1
    assert Document.Kind.DATA_EXPORT in kinds
    for _pk, _case, _kind, name, sha256 in documents:
        assert sha256_of(restored_media / name) == sha256
        assert sha256_of(media_root / name) == sha256
    assert "cases: 3" in checked
    assert f"files checked: {len(documents)}, problems: 0" in checked
