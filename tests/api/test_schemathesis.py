"""schemathesis against the live API: no 500, every answer matches the schema.

Bounded (few examples per operation, one worker) so it finishes in about a
minute; run by ``make test`` like every other test.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from api.models import Scope
from api.services import api_key_create
from cases.models import CaseState
from tests import factories
from tests.fixtures import ensure_staff_groups

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(300)]

SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")


@pytest.fixture
def seeded(db):
    ensure_staff_groups()
    cases = [
        factories.CaseFactory(state=state)
        for state in (CaseState.SUBMITTED, CaseState.IN_REVIEW, CaseState.COMPLETED)
    ]
    staff = factories.UserFactory(
        username="api-robot", is_staff=True, is_superuser=True
    )
    _api_key, key = api_key_create(
        name="schemathesis", scopes=list(Scope.values), staff_user=staff
    )
    serial = cases[0].case_terminals.get().terminal.serial_number
    return key, cases[0].reference, serial


def test_the_api_holds_its_schema_under_schemathesis(
    live_server, seeded, monkeypatch, tmp_path
):
    # given: a live server and a key that may do everything, unthrottled
    from api.auth import APIKeyRateThrottle

    monkeypatch.setattr(APIKeyRateThrottle, "rate", "100000/min", raising=False)
    if not SCHEMATHESIS.exists():
        pytest.fail(f"schemathesis is not installed at {SCHEMATHESIS}")
    key, reference, serial = seeded
    # Real identifiers in the paths, so that the operations get past the 404
    # of an unknown case (the staff actions then run on a real case).
    (tmp_path / "schemathesis.toml").write_text(
        "[parameters]\n"
        f'"path.reference" = "{reference}"\n'
        f'"path.serial_number" = "{serial}"\n'
    )

    # when
    run = subprocess.run(
        [
            str(SCHEMATHESIS),
            "run",
            f"{live_server.url}/api/schema/?format=json",
            "--url",
            live_server.url,
            "--header",
            f"Authorization: Api-Key {key}",
            "--checks",
            "not_a_server_error,status_code_conformance,"
            "content_type_conformance,response_schema_conformance",
            "--phases",
            "examples,coverage,fuzzing,stateful",
            "--max-examples",
            "8",
            "--workers",
            "1",
            "--request-timeout",
            "20",
            "--seed",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=280,
        cwd=tmp_path,
        env={**os.environ, "SCHEMATHESIS_HOOKS": ""},
    )

    # then
    print(run.stdout[-4000:])
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
