"""Abandoning a failed case: Operations closes it for good, with a reason."""

from http import HTTPStatus

import pytest
from django.core import mail
from django.urls import reverse

from cases.models import (
    CaseEvent,
    CaseState,
    CaseTerminal,
    ExecutionStep,
    Notification,
)
from cases.services.review import case_transition
from terminals.models import Binding
from tests import factories
from tests.cases.test_chains import chain_awaiting_approval, core  # noqa: F401


@pytest.fixture
def failed_chain(core, reviewer, approver, django_capture_on_commit_callbacks):  # noqa: F811
    """A chain of 5 whose core refused 2 terminals: 3 unbound, then failed."""
    case = chain_awaiting_approval(terminals=5, reviewer=reviewer)
    serials = sorted(
        case.case_terminals.values_list("terminal__serial_number", flat=True)
    )
    core.refuse = {serials[1], serials[3]}
    with django_capture_on_commit_callbacks(execute=True):
        case_transition(case_id=case.pk, name="approve", actor=approver)
    case.refresh_from_db()
    assert case.state == CaseState.FAILED
    mail.outbox.clear()
    return case, serials


@pytest.mark.django_db
def test_operations_abandons_a_failed_chain_after_a_confirmation_listing_what_stays(
    client, operations, failed_chain, settings, django_capture_on_commit_callbacks
):
    # given
    settings.NOTIFICATION_CHANNELS = ["email", "sms"]
    settings.SMS_BACKEND = "console"
    case, serials = failed_chain
    released = [serials[0], serials[2], serials[4]]
    kept = [serials[1], serials[3]]
    client.force_login(operations)
    url = reverse("admin:cases_case_transition", args=[case.pk, "abandon"])

    # when: the confirmation page
    page = client.get(url)

    # then: the steps done, the terminals unbound and those kept bound
    html = page.content.decode()
    assert page.status_code == HTTPStatus.OK
    assert str(ExecutionStep.Step.VERIFY_BINDINGS.label) in html
    assert str(ExecutionStep.Step.SETTLE.label) in html
    assert f"<p data-terminals-released>{', '.join(released)}</p>" in html
    assert f"<p data-terminals-kept>{', '.join(kept)}</p>" in html

    # when: posted without a note, then with one
    refused = client.post(url, {"note": " "})
    with django_capture_on_commit_callbacks(execute=True):
        done = client.post(url, {"note": "The core keeps refusing; file anew."})

    # then
    case.refresh_from_db()
    assert refused.status_code == HTTPStatus.OK  # the form again, with its error
    assert done.status_code == HTTPStatus.FOUND
    assert case.state == CaseState.REJECTED
    assert case.decision_note == "The core keeps refusing; file anew."
    event = CaseEvent.objects.get(case=case, transition="abandon")
    assert (event.from_state, event.to_state, event.actor) == (
        CaseState.FAILED,
        CaseState.REJECTED,
        operations,
    )
    assert event.visible_to_merchant
    # the terminals no longer blocked; the bindings as the steps left them
    assert not CaseTerminal.objects.filter(case=case, is_open=True).exists()
    assert (
        sorted(
            Binding.objects.active()
            .filter(merchant=case.merchant)
            .values_list("terminal__serial_number", flat=True)
        )
        == kept
    )
    # the merchant told by e-mail and SMS
    notices = Notification.objects.filter(case=case, kind="abandoned")
    assert sorted(notices.values_list("channel", flat=True)) == ["email", "sms"]
    assert set(notices.values_list("status", flat=True)) == {"sent"}
    (message,) = [m for m in mail.outbox if case.reference in m.subject]
    assert case.merchant.contact_email in message.to
    assert "The core keeps refusing; file anew." in message.body
    assert ", ".join(kept) in message.body
    assert ", ".join(released) in message.body


@pytest.mark.django_db
def test_an_abandoned_case_frees_its_terminals_for_a_new_case(operations, failed_chain):
    # given
    case, _ = failed_chain
    case_transition(case_id=case.pk, name="abandon", actor=operations, note="Stop.")

    # when: a new case names a terminal still bound
    still_bound = CaseTerminal.objects.filter(
        case=case, execution_status=CaseTerminal.ExecutionStatus.FAILED
    ).first()
    again = factories.CaseFactory(
        merchant=case.merchant, terminals=[still_bound.terminal]
    )

    # then: the database's one-open-case rule lets it in
    assert (
        CaseTerminal.objects.filter(terminal=still_bound.terminal, is_open=True)
        .get()
        .case
        == again
    )


@pytest.mark.django_db
@pytest.mark.parametrize("role", ["reviewer", "approver", "auditor"])
def test_only_operations_may_abandon(request, client, role, failed_chain):
    # given
    case, _ = failed_chain
    client.force_login(request.getfixturevalue(role))
    url = reverse("admin:cases_case_transition", args=[case.pk, "abandon"])

    # when
    response = client.post(url, {"note": "Give up."})

    # then
    case.refresh_from_db()
    assert response.status_code == HTTPStatus.FORBIDDEN
    assert case.state == CaseState.FAILED
    assert CaseTerminal.objects.filter(case=case, is_open=True).count() == 5
    assert not Notification.objects.filter(case=case, kind="abandoned").exists()


@pytest.mark.django_db
def test_the_tracking_page_tells_the_merchant_it_was_stopped_and_why(
    client, operations, failed_chain
):
    # given
    case, _ = failed_chain
    case_transition(
        case_id=case.pk, name="abandon", actor=operations, note="Core refusal."
    )

    # when
    page = client.get(case.get_tracking_path())

    # then
    html = page.content.decode()
    assert 'data-status="rejected"' in html
    assert "stopped the request" in html
    assert "Core refusal." in html
