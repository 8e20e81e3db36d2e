"""Who gets what when a case completes: data only where the work needs it.

The applicant's address was typed into the form and never verified, so the
transaction export and the amounts go to the merchant's contact on file; the
applicant gets the notice alone. Each department gets what its own work needs.
"""

import pytest
from django.core import mail

from cases.models import Notification
from cases.services.execution import case_execute
from terminals.masking import mask_phone
from tests.cases.test_execution import approved_case

pytestmark = pytest.mark.django_db

DEPARTMENTS = {
    "finance": "fin@example.com",
    "sales": "sales@example.com",
    "operations": "ops@example.com",
}
# The amounts of approved_case's transactions and their settlement total.
AMOUNTS = ("100.00", "28.50", "999.00", "257.00")


@pytest.fixture(autouse=True)
def _departments(settings):
    settings.DEPARTMENT_EMAILS = dict(DEPARTMENTS)


def _complete(django_capture_on_commit_callbacks, **kwargs):
    case = approved_case(**kwargs)
    with django_capture_on_commit_callbacks(execute=True):
        case_execute(case_id=case.pk)
    case.refresh_from_db()
    return case


def _message_to(address: str):
    (message,) = [m for m in mail.outbox if address in m.to]
    return message


def _texts(message) -> list[str]:
    return [message.body, *(content for content, _type in message.alternatives)]


def _attachments(message) -> list[str]:
    return [a[0] for a in message.attachments]


def test_the_applicant_gets_the_completion_notice_without_the_data(
    django_capture_on_commit_callbacks,
):
    # when: a case filed by an applicant other than the contact on file completes
    case = _complete(
        django_capture_on_commit_callbacks, applicant_email="typed@else.example.com"
    )

    # then: the applicant is told, with no attachment and no amount
    applicant = _message_to("typed@else.example.com")
    assert applicant.to == ["typed@else.example.com"]
    assert case.reference in applicant.subject
    assert _attachments(applicant) == []
    for text in _texts(applicant):
        assert case.reference in text
        for amount in AMOUNTS:
            assert amount not in text
        assert "attached" not in text
    # and the contact on file gets the export and the amounts
    contact = _message_to(case.merchant.contact_email)
    assert contact.to == [case.merchant.contact_email]
    assert _attachments(contact) == [f"{case.reference}-transactions.csv"]
    assert "257.00" in contact.body
    # nor does the outbox row of the applicant's notice hold the export
    row = Notification.objects.get(case=case, recipients=["typed@else.example.com"])
    assert "attachments" not in row.context
    assert "settlement_total" not in row.context


def test_an_applicant_who_is_the_contact_on_file_gets_one_message_with_the_export(
    django_capture_on_commit_callbacks,
):
    # when
    case = approved_case()
    case.applicant_email = case.merchant.contact_email.upper()
    case.save(update_fields=["applicant_email"])
    with django_capture_on_commit_callbacks(execute=True):
        case_execute(case_id=case.pk)

    # then
    merchant_mail = [
        m for m in mail.outbox if not set(m.to) & set(DEPARTMENTS.values())
    ]
    assert len(merchant_mail) == 1
    assert _attachments(merchant_mail[0]) == [f"{case.reference}-transactions.csv"]


@pytest.mark.parametrize("language", ["en", "zh-hans"])
def test_finance_gets_the_amounts_and_the_export(
    django_capture_on_commit_callbacks, language
):
    # when
    case = _complete(django_capture_on_commit_callbacks, language=language)

    # then
    message = _message_to(DEPARTMENTS["finance"])
    assert case.reference in message.subject
    assert message.alternatives[0][1] == "text/html"
    assert _attachments(message) == [f"{case.reference}-transactions.csv"]
    for text in _texts(message):
        assert "257.00" in text
        assert (
            f"{case.reference}-FINAL" in text or case.settlement_batch.reference in text
        )
    if language == "zh-hans":
        assert "财务" in message.body


@pytest.mark.parametrize("language", ["en", "zh-hans"])
def test_sales_gets_the_merchant_and_terminals_but_no_transactions(
    django_capture_on_commit_callbacks, language
):
    # when
    case = _complete(django_capture_on_commit_callbacks, language=language)

    # then
    message = _message_to(DEPARTMENTS["sales"])
    assert case.reference in message.subject
    assert message.alternatives[0][1] == "text/html"
    assert _attachments(message) == []
    merchant = case.merchant
    serials = list(
        case.case_terminals.values_list("terminal__serial_number", flat=True)
    )
    for text in _texts(message):
        assert merchant.merchant_id in text
        for serial in serials:
            assert serial in text
        for amount in AMOUNTS:
            assert amount not in text
        # personal data only masked
        assert merchant.contact_phone not in text
        assert mask_phone(merchant.contact_phone) in text
        assert merchant.legal_rep_id_number not in text
        assert merchant.contact_email not in text
    if language == "zh-hans":
        assert "销售" in message.body


@pytest.mark.parametrize("language", ["en", "zh-hans"])
def test_operations_gets_the_execution_steps_but_no_transactions(
    django_capture_on_commit_callbacks, language
):
    # when
    case = _complete(django_capture_on_commit_callbacks, language=language)

    # then
    message = _message_to(DEPARTMENTS["operations"])
    assert case.reference in message.subject
    assert message.alternatives[0][1] == "text/html"
    assert _attachments(message) == []
    serials = list(
        case.case_terminals.values_list("terminal__serial_number", flat=True)
    )
    for text in _texts(message):
        for amount in AMOUNTS:
            assert amount not in text
        for serial in serials:
            assert serial in text
    expected = "End the bindings" if language == "en" else "解除绑定"
    assert expected in message.body
    if language == "zh-hans":
        assert "运营" in message.body


def test_department_outbox_rows_hold_only_what_the_department_needs(
    django_capture_on_commit_callbacks,
):
    # when
    case = _complete(django_capture_on_commit_callbacks)

    # then
    rows = {
        n.context["department"]: n.context
        for n in Notification.objects.filter(case=case, kind="department_completed")
    }
    assert rows["finance"]["attachments"]
    assert "attachments" not in rows["sales"]
    assert "attachments" not in rows["operations"]
    assert "settlement_total" not in rows["sales"]
    assert "settlement_total" not in rows["operations"]
