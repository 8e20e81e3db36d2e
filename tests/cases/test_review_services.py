"""Staff use cases of cases.services.review: transitions, assignment, documents."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.core import mail
from django.core.exceptions import PermissionDenied
from django.utils import timezone

from cases.models import (
    Case,
    CaseEvent,
    CaseState,
    CaseTerminal,
    Document,
    Notification,
)
from cases.selectors import case_dashboard_counts, case_impact
from cases.services import review
from cases.services.common import CaseActionError
from tests import factories

pytestmark = pytest.mark.django_db


@pytest.fixture
def dispatched(monkeypatch):
    """Record execution dispatches instead of queuing the real execution."""
    calls: list[int] = []
    monkeypatch.setattr(
        "cases.services.execution.case_execution_dispatch",
        lambda *, case_id: calls.append(case_id),
    )
    return calls


def _in_review(reviewer, **kwargs) -> Case:
    return factories.CaseFactory(
        state=CaseState.IN_REVIEW, assigned_to=reviewer, **kwargs
    )


def _recommended(reviewer, **kwargs) -> Case:
    case = factories.CaseFactory(
        state=CaseState.AWAITING_APPROVAL,
        assigned_to=reviewer,
        recommended_by=reviewer,
        **kwargs,
    )
    factories.accepted_documents_for(case, reviewer=reviewer)
    return case


def _transition_events(case: Case, name: str):
    return CaseEvent.objects.filter(
        case=case, type=CaseEvent.Type.TRANSITION, transition=name
    )


# --- start_review ----------------------------------------------------------------


def test_start_review_assigns_the_case_to_the_reviewer(reviewer):
    # given
    case = factories.CaseFactory(state=CaseState.SUBMITTED)

    # when
    review.case_transition(case_id=case.pk, name="start_review", actor=reviewer)

    # then
    case.refresh_from_db()
    assert case.state == CaseState.IN_REVIEW
    assert case.assigned_to == reviewer
    event = _transition_events(case, "start_review").get()
    assert event.actor == reviewer
    assert (event.from_state, event.to_state) == ("submitted", "in_review")


def test_an_auditor_is_refused_and_nothing_changes(auditor):
    # given
    case = factories.CaseFactory(state=CaseState.SUBMITTED)

    # when
    with pytest.raises(PermissionDenied):
        review.case_transition(case_id=case.pk, name="start_review", actor=auditor)

    # then
    case.refresh_from_db()
    assert case.state == CaseState.SUBMITTED
    assert case.assigned_to is None
    assert not CaseEvent.objects.filter(case=case).exists()


def test_an_auditor_who_is_also_a_reviewer_still_changes_nothing(reviewer):
    # given
    from django.contrib.auth.models import Group

    reviewer.groups.add(Group.objects.get(name="Auditor"))
    case = factories.CaseFactory(state=CaseState.SUBMITTED)

    # when / then
    with pytest.raises(PermissionDenied):
        review.case_transition(case_id=case.pk, name="start_review", actor=reviewer)
    case.refresh_from_db()
    assert case.state == CaseState.SUBMITTED


# --- request_info ----------------------------------------------------------------


def test_request_info_needs_a_note(reviewer):
    # given
    case = _in_review(reviewer)

    # when
    with pytest.raises(CaseActionError):
        review.case_transition(
            case_id=case.pk, name="request_info", actor=reviewer, note="   "
        )

    # then
    case.refresh_from_db()
    assert case.state == CaseState.IN_REVIEW
    assert not Notification.objects.exists()
    assert not CaseEvent.objects.filter(case=case).exists()


def test_request_info_shows_the_note_to_the_merchant_and_emails_it(
    reviewer, django_capture_on_commit_callbacks
):
    # given
    case = _in_review(reviewer, info_reminded_at=timezone.now() - timedelta(days=9))

    # when
    with django_capture_on_commit_callbacks(execute=True):
        review.case_transition(
            case_id=case.pk,
            name="request_info",
            actor=reviewer,
            note="请上传营业执照的清晰照片",
            client_ip="10.0.0.8",
        )

    # then
    case.refresh_from_db()
    assert case.state == CaseState.INFO_REQUESTED
    assert case.info_requested_at is not None
    assert case.info_reminded_at is None
    event = _transition_events(case, "request_info").get()
    assert event.visible_to_merchant is True
    assert event.note == "请上传营业执照的清晰照片"
    assert event.client_ip == "10.0.0.8"
    notification = Notification.objects.get(case=case)
    assert notification.kind == Notification.Kind.INFO_REQUESTED
    assert notification.dedupe_key == f"case:{case.pk}:info_requested:{event.pk}"
    assert set(notification.recipients) == {
        case.merchant.contact_email,
        case.applicant_email,
    }
    assert notification.status == Notification.Status.SENT
    [message] = mail.outbox
    assert case.reference in message.subject
    assert "请上传营业执照的清晰照片" in message.body
    assert case.get_tracking_path() in message.body
    html = message.alternatives[0][0]
    assert "请上传营业执照的清晰照片" in html


def test_only_the_assignee_acts_on_a_case_in_review_until_someone_takes_it_over(
    reviewer, second_reviewer
):
    # given
    case = _in_review(reviewer)

    # when
    with pytest.raises(CaseActionError) as refused:
        review.case_transition(
            case_id=case.pk, name="request_info", actor=second_reviewer, note="?"
        )

    # then
    assert "Assign to me" in str(refused.value.message)
    case.refresh_from_db()
    assert case.state == CaseState.IN_REVIEW

    # when taking it over explicitly
    review.case_assign(case_id=case.pk, actor=second_reviewer, assignee=second_reviewer)
    review.case_transition(
        case_id=case.pk, name="request_info", actor=second_reviewer, note="?"
    )

    # then
    case.refresh_from_db()
    assert case.state == CaseState.INFO_REQUESTED
    assigned = CaseEvent.objects.get(case=case, type=CaseEvent.Type.ASSIGNED)
    assert assigned.payload == {"from": "reviewer", "to": "reviewer2"}
    assert assigned.actor == second_reviewer


# --- recommend ------------------------------------------------------------------


def test_recommend_names_the_missing_and_unreviewed_documents(reviewer):
    # given
    case = _in_review(reviewer)
    factories.DocumentFactory(
        case=case,
        kind=Document.Kind.BUSINESS_LICENCE,
        original_name="licence.pdf",
        review_status=Document.ReviewStatus.ACCEPTED,
    )
    factories.DocumentFactory(
        case=case, kind=Document.Kind.LEGAL_REP_ID, original_name="id-front.jpg"
    )

    # when
    with pytest.raises(CaseActionError) as refused:
        review.case_transition(case_id=case.pk, name="recommend", actor=reviewer)

    # then
    message = str(refused.value.message)
    assert "id-front.jpg" in message
    assert str(Document.Kind.DEVICE_EVIDENCE.label) in message
    assert str(Document.Kind.LEGAL_REP_ID.label) in message
    case.refresh_from_db()
    assert case.state == CaseState.IN_REVIEW
    assert case.recommended_by is None


def test_recommend_with_every_required_document_accepted(reviewer):
    # given
    case = _in_review(reviewer, close_account=True)
    factories.accepted_documents_for(case, reviewer=reviewer)
    factories.DocumentFactory(
        case=case,
        kind=Document.Kind.OTHER,
        review_status=Document.ReviewStatus.REJECTED,
        review_note="unreadable",
    )

    # when
    review.case_transition(
        case_id=case.pk, name="recommend", actor=reviewer, note="all in order"
    )

    # then
    case.refresh_from_db()
    assert case.state == CaseState.AWAITING_APPROVAL
    assert case.recommended_by == reviewer
    event = _transition_events(case, "recommend").get()
    # A staff note on an internal step is never shown to the merchant.
    assert event.visible_to_merchant is False


# --- approve (maker-checker) ----------------------------------------------------


def test_the_approver_who_recommended_cannot_approve(approver, dispatched):
    # given
    case = factories.CaseFactory(state=CaseState.IN_REVIEW, assigned_to=approver)
    factories.accepted_documents_for(case)
    review.case_transition(case_id=case.pk, name="recommend", actor=approver)

    # when
    with pytest.raises(PermissionDenied) as refused:
        review.case_transition(case_id=case.pk, name="approve", actor=approver)

    # then
    assert "different approver" in str(refused.value)
    case.refresh_from_db()
    assert case.state == CaseState.AWAITING_APPROVAL
    assert case.approved_by is None
    assert not _transition_events(case, "approve").exists()
    assert dispatched == []


def test_another_approver_approves_and_the_execution_is_dispatched(
    reviewer, approver, dispatched
):
    # given
    case = _recommended(reviewer)

    # when
    review.case_transition(case_id=case.pk, name="approve", actor=approver)

    # then
    case.refresh_from_db()
    assert case.state == CaseState.APPROVED
    assert case.approved_by == approver
    assert case.approved_at is not None
    assert case.execution_queued_at is not None
    assert _transition_events(case, "approve").get().actor == approver
    assert dispatched == [case.pk]


def test_a_reviewer_cannot_approve(reviewer, second_reviewer, dispatched):
    # given
    case = _recommended(reviewer)

    # when
    with pytest.raises(PermissionDenied):
        review.case_transition(case_id=case.pk, name="approve", actor=second_reviewer)

    # then
    case.refresh_from_db()
    assert case.state == CaseState.AWAITING_APPROVAL
    assert dispatched == []


def test_send_back_clears_the_recommendation(reviewer, approver):
    # given
    case = _recommended(reviewer)

    # when
    review.case_transition(
        case_id=case.pk, name="send_back", actor=approver, note="check the SN"
    )

    # then
    case.refresh_from_db()
    assert case.state == CaseState.IN_REVIEW
    assert case.recommended_by is None
    assert case.assigned_to == reviewer


# --- reject ---------------------------------------------------------------------


def test_reject_needs_a_note(reviewer):
    # given
    case = _in_review(reviewer)

    # when / then
    with pytest.raises(CaseActionError):
        review.case_transition(case_id=case.pk, name="reject", actor=reviewer)
    case.refresh_from_db()
    assert case.state == CaseState.IN_REVIEW


def test_reject_closes_the_case_frees_the_terminals_and_emails_the_reason(
    reviewer, django_capture_on_commit_callbacks
):
    # given
    case = _in_review(reviewer)

    # when
    with django_capture_on_commit_callbacks(execute=True):
        review.case_transition(
            case_id=case.pk, name="reject", actor=reviewer, note="营业执照已过期"
        )

    # then
    case.refresh_from_db()
    assert case.state == CaseState.REJECTED
    assert case.decision_note == "营业执照已过期"
    assert case.closed_at is not None
    assert not CaseTerminal.objects.filter(case=case, is_open=True).exists()
    event = _transition_events(case, "reject").get()
    assert event.visible_to_merchant is True
    notification = Notification.objects.get(case=case)
    assert notification.kind == Notification.Kind.REJECTED
    [message] = mail.outbox
    assert case.reference in message.subject
    assert "营业执照已过期" in message.body


def test_a_reviewer_cannot_reject_a_case_awaiting_approval(reviewer):
    # given
    case = _recommended(reviewer)

    # when / then
    with pytest.raises(PermissionDenied):
        review.case_transition(
            case_id=case.pk, name="reject", actor=reviewer, note="changed my mind"
        )
    case.refresh_from_db()
    assert case.state == CaseState.AWAITING_APPROVAL


# --- retry ----------------------------------------------------------------------


def test_operations_retry_a_failed_case(operations, dispatched):
    # given
    case = factories.CaseFactory(
        state=CaseState.FAILED, failure_step="settle", failure_reason="timeout"
    )

    # when
    review.case_transition(case_id=case.pk, name="retry", actor=operations)

    # then
    case.refresh_from_db()
    assert case.state == CaseState.APPROVED
    assert (case.failure_step, case.failure_reason) == ("", "")
    assert case.execution_queued_at is not None
    assert dispatched == [case.pk]


def test_a_reviewer_cannot_retry(reviewer, dispatched):
    # given
    case = factories.CaseFactory(state=CaseState.FAILED, failure_step="settle")

    # when / then
    with pytest.raises(PermissionDenied):
        review.case_transition(case_id=case.pk, name="retry", actor=reviewer)
    case.refresh_from_db()
    assert case.state == CaseState.FAILED
    assert case.failure_step == "settle"
    assert dispatched == []


def test_a_transition_from_the_wrong_state_says_why(approver):
    # given
    case = factories.CaseFactory(state=CaseState.COMPLETED)

    # when
    with pytest.raises(CaseActionError) as refused:
        review.case_transition(case_id=case.pk, name="approve", actor=approver)

    # then
    assert str(CaseState.COMPLETED.label) in str(refused.value.message)


def test_the_assignee_releases_a_case_to_the_queue_for_anyone(
    reviewer, second_reviewer
):
    # given
    case = _in_review(reviewer)

    # when
    review.case_transition(case_id=case.pk, name="release", actor=reviewer)
    review.case_transition(case_id=case.pk, name="start_review", actor=second_reviewer)

    # then
    case.refresh_from_db()
    assert (case.state, case.assigned_to) == (CaseState.IN_REVIEW, second_reviewer)
    released = CaseEvent.objects.get(case=case, transition="release")
    assert (released.from_state, released.to_state) == (
        CaseState.IN_REVIEW,
        CaseState.SUBMITTED,
    )
    assert released.actor == reviewer


def test_only_the_assignee_releases_a_case(reviewer, second_reviewer):
    # given
    case = _in_review(reviewer)

    # when
    with pytest.raises(CaseActionError):
        review.case_transition(case_id=case.pk, name="release", actor=second_reviewer)

    # then
    case.refresh_from_db()
    assert (case.state, case.assigned_to) == (CaseState.IN_REVIEW, reviewer)


def test_the_buttons_follow_the_same_rules(reviewer, second_reviewer, approver):
    # given
    case = _in_review(reviewer)
    factories.accepted_documents_for(case)

    # then
    assert review.case_transitions_for_user(case=case, user=reviewer) == [
        "request_info",
        "release",
        "recommend",
        "reject",
    ]
    assert review.case_transitions_for_user(case=case, user=second_reviewer) == []
    assert review.case_transitions_for_user(case=case, user=approver) == []


# --- assignment -----------------------------------------------------------------


def test_a_reviewer_cannot_assign_a_case_to_someone_else(reviewer, second_reviewer):
    # given
    case = factories.CaseFactory(state=CaseState.SUBMITTED)

    # when / then
    with pytest.raises(PermissionDenied):
        review.case_assign(case_id=case.pk, actor=reviewer, assignee=second_reviewer)
    case.refresh_from_db()
    assert case.assigned_to is None


def test_an_approver_dispatches_a_case_to_a_reviewer(approver, reviewer):
    # given
    case = factories.CaseFactory(state=CaseState.SUBMITTED)

    # when
    review.case_assign(case_id=case.pk, actor=approver, assignee=reviewer)

    # then
    case.refresh_from_db()
    assert case.assigned_to == reviewer
    assert CaseEvent.objects.filter(case=case, type=CaseEvent.Type.ASSIGNED).exists()


def test_a_closed_case_cannot_be_assigned(reviewer):
    # given
    case = factories.CaseFactory(state=CaseState.REJECTED)

    # when / then
    with pytest.raises(CaseActionError):
        review.case_assign(case_id=case.pk, actor=reviewer, assignee=reviewer)
    assert not CaseEvent.objects.filter(case=case).exists()


# --- documents ------------------------------------------------------------------


def test_document_review_records_the_decision_and_reviewing_again_overrides(
    reviewer,
):
    # given
    case = _in_review(reviewer)
    document = factories.DocumentFactory(case=case)

    # when
    review.document_review(
        document_id=document.pk, decision="reject", note="blurred", actor=reviewer
    )
    review.document_review(
        document_id=document.pk, decision="accept", note="", actor=reviewer
    )

    # then
    document.refresh_from_db()
    assert document.review_status == Document.ReviewStatus.ACCEPTED
    assert document.reviewed_by == reviewer
    assert document.review_note == ""
    decisions = list(
        CaseEvent.objects.filter(
            case=case, type=CaseEvent.Type.DOCUMENT_REVIEWED
        ).values_list("payload__decision", "note")
    )
    assert decisions == [("rejected", "blurred"), ("accepted", "")]


def test_rejecting_a_document_needs_a_note(reviewer):
    # given
    case = _in_review(reviewer)
    document = factories.DocumentFactory(case=case)

    # when / then
    with pytest.raises(CaseActionError):
        review.document_review(
            document_id=document.pk, decision="reject", note="", actor=reviewer
        )
    document.refresh_from_db()
    assert document.review_status == Document.ReviewStatus.PENDING


@pytest.mark.parametrize(
    "state", [CaseState.SUBMITTED, CaseState.AWAITING_APPROVAL, CaseState.REJECTED]
)
def test_documents_are_only_reviewed_while_in_review(reviewer, state):
    # given
    case = factories.CaseFactory(state=state, assigned_to=reviewer)
    document = factories.DocumentFactory(case=case)

    # when / then
    with pytest.raises(CaseActionError):
        review.document_review(
            document_id=document.pk, decision="accept", note="", actor=reviewer
        )
    document.refresh_from_db()
    assert document.review_status == Document.ReviewStatus.PENDING
    assert not CaseEvent.objects.filter(case=case).exists()


def test_an_auditor_cannot_review_documents(reviewer, auditor):
    # given
    case = _in_review(reviewer)
    document = factories.DocumentFactory(case=case)

    # when / then
    with pytest.raises(PermissionDenied):
        review.document_review(
            document_id=document.pk, decision="accept", note="", actor=auditor
        )
    document.refresh_from_db()
    assert document.review_status == Document.ReviewStatus.PENDING


# --- fees -----------------------------------------------------------------------


def test_the_fees_statement_is_shown_to_the_merchant(reviewer):
    # given
    case = _in_review(reviewer)

    # when
    review.case_fees_statement_set(
        case_id=case.pk, actor=reviewer, text="设备回收费 ¥50"
    )

    # then
    case.refresh_from_db()
    assert case.fees_statement == "设备回收费 ¥50"
    event = CaseEvent.objects.get(case=case, type=CaseEvent.Type.FEES_STATED)
    assert event.visible_to_merchant is True
    assert event.note == "设备回收费 ¥50"


# --- selectors ------------------------------------------------------------------


def test_the_impact_sums_unsettled_transactions_and_flags_foreign_bindings():
    # given
    merchant = factories.MerchantFactory()
    mine = factories.BindingFactory(merchant=merchant).terminal
    foreign = factories.BindingFactory().terminal
    factories.TransactionFactory(terminal=mine, amount=Decimal("100.10"))
    factories.TransactionFactory(terminal=mine, amount=Decimal("20.00"))
    factories.TransactionFactory(terminal=mine, amount=Decimal("5.00"), settled=True)
    factories.BindingFactory(merchant=merchant)  # bound, not in the case
    replacement = factories.TerminalFactory()
    case = factories.CaseFactory(
        merchant=merchant,
        terminals=[mine, foreign],
        close_account=True,
        replacement_terminal=replacement,
        state=CaseState.AWAITING_APPROVAL,
    )

    # when
    impact = case_impact(case=case)

    # then
    assert impact.unsettled_count == 2
    assert impact.unsettled_total == Decimal("120.10")
    assert impact.close_account is True
    assert impact.other_bound_count == 1
    assert impact.replacement == replacement
    assert impact.replacement_binding is None
    assert impact.problems == [foreign.serial_number]


def test_dashboard_counts(reviewer):
    # given
    factories.CaseFactory(state=CaseState.SUBMITTED)
    factories.CaseFactory(
        state=CaseState.SUBMITTED, review_due_at=timezone.now() - timedelta(hours=1)
    )
    factories.CaseFactory(state=CaseState.IN_REVIEW, assigned_to=reviewer)
    factories.CaseFactory(state=CaseState.COMPLETED, closed_at=timezone.now())
    factories.CaseFactory(
        state=CaseState.COMPLETED, closed_at=timezone.now() - timedelta(days=30)
    )

    # when
    counts = case_dashboard_counts(user=reviewer)

    # then
    per_state = {value: n for value, _label, n in counts.per_state}
    assert per_state["submitted"] == 2
    assert per_state["completed"] == 2
    assert counts.overdue == 1
    assert counts.my_queue == 1
    assert counts.completed_this_week == 1
    assert counts.total_open == 3
