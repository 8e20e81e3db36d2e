"""The filing POST's queries: a fixed number, whatever it carries.

Issue 15: each query of the filing is an ORM compile and a round trip in the
web process. The registry check is one query (the merchant, its bindings of
the listed terminals and the open cases holding them), the documents, the
audit entries and the outbox rows are each one INSERT. The count is pinned:
a look-up that creeps back fails here.
"""

from datetime import timedelta
from http import HTTPStatus

import pytest
from django.urls import reverse
from django.utils import timezone

from cases.models import (
    Case,
    CaseEvent,
    CaseState,
    CaseTerminal,
    Document,
    DocumentPreview,
    Notification,
)
from cases.services import intake
from tests import factories
from tests.cases.test_intake import form_data, pdf
from tests.fixtures import issued_submission_key

pytestmark = pytest.mark.django_db

# The POST of a valid filing, inside the test's transaction (so the filing's
# own transaction is a SAVEPOINT ... RELEASE pair instead of BEGIN ... COMMIT):
#  1 the registry check (bindings + merchant + open cases, one SELECT)
#  2 the submission key's case, if it was filed already
#  3 SAVEPOINT
#  4 INSERT the case, 5 UPDATE its reference and code
#  6 INSERT its terminals, 7 INSERT its documents
#  8 INSERT the audit entries "filed" and "code sent"
#  9 INSERT the outbox row of the code's e-mail
# 10 RELEASE SAVEPOINT
FILING_QUERIES = 10


def _registry(terminal_count: int):
    merchant = factories.MerchantFactory(legal_rep_name="张伟")
    terminals = [
        factories.BindingFactory(merchant=merchant).terminal
        for _ in range(terminal_count)
    ]
    return merchant, terminals


@pytest.mark.parametrize(
    ("terminal_count", "evidence"), [(1, 1), (4, 5)], ids=["small", "large"]
)
def test_a_filing_costs_the_same_queries_whatever_it_carries(
    client, media_root, django_assert_num_queries, terminal_count, evidence
):
    merchant, terminals = _registry(terminal_count)
    key = issued_submission_key(client)
    data = form_data(
        merchant,
        terminals,
        submission_key=key,
        device_evidence=[pdf(f"device-{n}.pdf") for n in range(evidence)],
    )

    with django_assert_num_queries(FILING_QUERIES):
        response = client.post(reverse("cases:new"), data)

    assert response.status_code == HTTPStatus.FOUND, response.context["form"].errors
    case = Case.objects.get()
    # Nothing was bought by dropping a row: every document, terminal, audit
    # entry and outbox row of the filing is there.
    assert case.documents.count() == 3 + evidence
    assert CaseTerminal.objects.filter(case=case).count() == terminal_count
    assert list(case.events.order_by("pk").values_list("type", flat=True)) == [
        CaseEvent.Type.FILED,
        CaseEvent.Type.CODE_SENT,
    ]
    assert case.events.get(type=CaseEvent.Type.FILED).payload["documents"] == (
        3 + evidence
    )
    notice = Notification.objects.get(case=case)
    assert notice.kind == Notification.Kind.VERIFICATION_CODE
    assert notice.dedupe_key == f"case:{case.pk}:code:1"
    assert notice.recipients == [merchant.contact_email]


def test_the_registry_check_sorts_free_busy_and_stale_terminals_in_one_query(
    django_assert_num_queries,
):
    merchant, (free, busy, stale) = _registry(3)
    factories.CaseFactory(
        merchant=merchant, state=CaseState.SUBMITTED, terminals=[busy]
    )
    expired = factories.CaseFactory(
        merchant=merchant,
        state=CaseState.PENDING_VERIFICATION,
        code_expires_at=timezone.now() - timedelta(minutes=1),
        terminals=[stale],
    )
    serials = [free.serial_number, busy.serial_number, stale.serial_number]

    with (
        django_assert_num_queries(1),
        pytest.raises(intake.IntakeRejected) as refused,
    ):
        intake.case_filing_check(
            merchant_id=merchant.merchant_id,
            uscc=merchant.uscc,
            legal_rep_name=merchant.legal_rep_name,
            serial_numbers=serials,
            close_account=False,
            replacement_serial_number="",
        )
    assert refused.value.serial_problems == {busy.serial_number: "busy"}

    found = intake.case_filing_check(
        merchant_id=merchant.merchant_id,
        uscc=merchant.uscc,
        legal_rep_name=merchant.legal_rep_name,
        serial_numbers=[free.serial_number, stale.serial_number],
        close_account=False,
        replacement_serial_number="",
    )
    assert found.merchant == merchant
    assert found.terminals == [free, stale]
    assert found.stale_case_ids == [expired.pk]


def test_a_wrong_identity_is_refused_alike_with_or_without_bound_terminals(
    django_assert_num_queries,
):
    merchant, terminals = _registry(1)
    other = factories.MerchantFactory()
    for serials in ([terminals[0].serial_number], ["SN-NOT-THERE-1"]):
        with pytest.raises(intake.IntakeRejected) as refused:
            intake.case_filing_check(
                merchant_id=merchant.merchant_id,
                uscc=other.uscc,
                legal_rep_name=merchant.legal_rep_name,
                serial_numbers=serials,
                close_account=False,
                replacement_serial_number="",
            )
        assert list(refused.value.errors) == [None]
        assert refused.value.serial_problems == {}


def test_a_filing_over_an_expired_unverified_case_supersedes_it(
    hooks_client, media_root
):
    client = hooks_client
    merchant, terminals = _registry(2)
    client.post(reverse("cases:new"), form_data(merchant, terminals))
    first = Case.objects.get()
    Case.objects.update(code_expires_at=timezone.now() - timedelta(minutes=1))

    response = client.post(reverse("cases:new"), form_data(merchant, terminals[:1]))

    assert response.status_code == HTTPStatus.FOUND
    first.refresh_from_db()
    assert first.state == CaseState.EXPIRED
    assert first.events.filter(transition="expire").exists()
    second = Case.objects.exclude(pk=first.pk).get()
    assert second.state == CaseState.PENDING_VERIFICATION
    assert set(
        CaseTerminal.objects.filter(is_open=True).values_list("case_id", flat=True)
    ) == {second.pk}
    assert Document.objects.filter(case=second).count() == 4


def test_a_filing_publishes_once_for_the_previews_and_once_for_the_code(
    client, media_root, django_capture_on_commit_callbacks
):
    # given: a filing with four PDFs (licence, two ID pages, device)
    merchant, terminals = _registry(1)
    data = form_data(merchant, terminals)

    # when
    with django_capture_on_commit_callbacks(execute=True) as after_commit:
        response = client.post(reverse("cases:new"), data)

    # then: two messages after commit, not one per PDF; the worker's fan-out
    # (run in process here) rendered every document's preview
    assert response.status_code == HTTPStatus.FOUND
    assert len(after_commit) == 2
    case = Case.objects.get()
    assert set(
        DocumentPreview.objects.filter(document__case=case).values_list(
            "document_id", "status"
        )
    ) == {(pk, "ready") for pk in case.documents.values_list("pk", flat=True)}
    assert Notification.objects.get(case=case).kind == (
        Notification.Kind.VERIFICATION_CODE
    )
