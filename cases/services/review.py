"""The staff side of a case: assignment, document review and the staff transitions.

Every use case runs in one transaction with the case row locked, so two staff
acting on the same case at the same moment are serialised: the second one
sees the state the first one left and is refused with a message.

Each staff action (its note, who may do it, the fields it sets, what it
queues) is one entry of ``cases.actions.STAFF_ACTIONS``; ``case_transition``
applies an entry. The rules, written down in ``docs/review.md``:

- Auditors read everything and change nothing: any member of the Auditor
  group is refused every change, whatever other group they are in.
- ``start_review`` (Reviewer or Approver) assigns the case to the actor. A
  submitted case that already has an assignee (it came back from the
  merchant) is started by that assignee, or taken over explicitly first.
- While a case is ``in_review`` only the user it is assigned to may review
  its documents, request information, recommend or reject it. Anyone else
  with the Reviewer or Approver role must first take it over explicitly with
  ``case_assign`` ("assign to me"), which is recorded in the timeline.
- ``approve`` needs the Approver group and is refused to the user who
  recommended the case (maker-checker). While a case awaits approval only an
  approver decides: approve, send back or reject.
- ``retry`` needs the Operations group.
- ``abandon`` (Operations) closes a failed case for good, with a note shown
  to the merchant: the steps done stay done, its terminals are freed for a
  new request, and the notice says which stay bound and which are unbound.
- The note of ``request_info``, ``reject`` and ``abandon`` is required, shown to the
  merchant and e-mailed. A note given with any other transition stays
  staff-only: that event is hidden from the merchant.
"""

from decimal import Decimal

from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from django_fsm import can_proceed

from cases import events, roles
from cases.actions import STAFF_ACTIONS
from cases.models import ASSIGNABLE_STATES, Case, CaseState, Document
from cases.notifications import case_recipients, notification_queue
from cases.services import execution, finance
from cases.services.chains import case_abandon_summary
from cases.services.common import CaseActionError, case_apply_transition, case_lock


def _refuse_unless_assignee(case: Case, actor) -> None:
    """Raise unless ``actor`` is the reviewer the case is assigned to."""
    if case.assigned_to_id != actor.pk:
        raise CaseActionError(
            _(
                "This case is assigned to %(user)s. Take it over with "
                "“Assign to me” first."
            )
            % {"user": case.assigned_to or _("nobody")}
        )


def _refuse_auditor(actor) -> None:
    if roles.is_auditor(actor):
        raise PermissionDenied(_("Auditors can read cases but not change them."))


# --- transitions ---------------------------------------------------------------


def case_transition_check(*, case: Case, name: str, actor) -> None:
    """Raise if ``actor`` may not apply transition ``name`` to ``case`` now.

    ``CaseActionError`` (with a message for the user) when the case's state
    or content does not allow it, ``PermissionDenied`` when the user may not.
    Nothing is changed. The same check drives the admin's buttons.
    """
    action = STAFF_ACTIONS.get(name)
    if action is None:
        raise CaseActionError(_("Unknown action."))
    _refuse_auditor(actor)
    if not can_proceed(getattr(case, name), check_conditions=False):
        raise CaseActionError(
            _("This case is %(state)s; it cannot be changed that way now.")
            % {"state": case.get_state_display()}
        )
    # The role rule alone (the fsm permission), without the conditions
    # (checked below with words).
    if not action.permits(case, actor):
        if action.not_by_recommender and case.recommended_by_id == actor.pk:
            raise PermissionDenied(
                _("You recommended this case, so a different approver must approve it.")
            )
        raise PermissionDenied(_("Your role does not allow this on this case."))
    if case.state == CaseState.AWAITING_APPROVAL and not roles.user_in_group(
        actor, roles.APPROVER
    ):
        raise PermissionDenied(_("Only an approver decides on a recommended case."))
    if action.assignee_only and case.state == CaseState.IN_REVIEW:
        _refuse_unless_assignee(case, actor)
    if action.keeps_assignee and case.assigned_to_id is not None:
        _refuse_unless_assignee(case, actor)
    if name == "recommend":
        missing = case.missing_for_recommendation()
        if missing:
            raise CaseActionError(
                _("It cannot be recommended yet: %(missing)s.")
                % {"missing": "; ".join(missing)}
            )


def case_transitions_for_user(*, case: Case, user) -> list[str]:
    """Return the staff transitions ``user`` may apply to ``case`` now, in button order."""
    allowed = []
    for name in STAFF_ACTIONS:
        try:
            case_transition_check(case=case, name=name, actor=user)
        except (CaseActionError, PermissionDenied):
            continue
        allowed.append(name)
    return allowed


def case_transition(
    *,
    case_id: int,
    name: str,
    actor,
    note: str = "",
    client_ip: str | None = None,
) -> Case:
    """Apply the staff transition ``name`` to the case as ``actor`` and return it.

    Locks the case, checks the rules above, applies the transition with its
    audit event and queues its side effects (e-mail, execution) after commit.
    """
    action = STAFF_ACTIONS.get(name)
    if action is None:
        raise CaseActionError(_("Unknown action."))
    note = (note or "").strip()
    if action.note_required and not note:
        raise CaseActionError(
            _("Write a note: it is shown to the merchant and e-mailed.")
        )
    with transaction.atomic():
        case = case_lock(case_id=case_id)
        case_transition_check(case=case, name=name, actor=actor)

        changes = action.sets(actor=actor, now=timezone.now(), note=note)
        for field_name, value in changes.items():
            setattr(case, field_name, value)
        event = case_apply_transition(
            case=case,
            name=name,
            actor=actor,
            note=note,
            client_ip=client_ip,
            update_fields=tuple(changes),
            visible_to_merchant=action.note_required or not note,
        )
        if action.freezes_statement:
            finance.case_statement_freeze(case=case, actor=actor)
        if action.notifies:
            context = {"note": note}
            if action.shows_steps:
                context.update(case_abandon_summary(case=case).notice_context())
            notification_queue(
                kind=action.notifies,
                recipients=case_recipients(case),
                case=case,
                context=context,
                dedupe_key=f"case:{case.pk}:{action.notifies}:{event.pk}",
            )
        if action.starts_execution:
            execution.case_execution_dispatch(case_id=case.pk)
    return case


# --- assignment ------------------------------------------------------------------


def case_assign(*, case_id: int, actor, assignee) -> Case:
    """Assign the case to ``assignee`` (usually the actor: "assign to me").

    Taking over a case assigned to someone else is allowed and recorded.
    Assigning to another user is for approvers (they dispatch the queue), and
    only to a Reviewer or Approver.
    """
    _refuse_auditor(actor)
    if not roles.is_case_staff(actor):
        raise PermissionDenied(_("Your role does not allow assigning cases."))
    if assignee is None or not assignee.is_active or not assignee.is_staff:
        raise CaseActionError(_("Choose an active staff user."))
    if assignee.pk != actor.pk:
        if not roles.user_in_group(actor, roles.APPROVER):
            raise PermissionDenied(_("Only approvers assign cases to others."))
        if not roles.is_case_staff(assignee):
            raise CaseActionError(
                _("%(user)s is not a reviewer or approver.") % {"user": assignee}
            )
    with transaction.atomic():
        case = case_lock(case_id=case_id)
        if case.state not in ASSIGNABLE_STATES:
            raise CaseActionError(
                _("This case is %(state)s; it cannot be assigned now.")
                % {"state": case.get_state_display()}
            )
        if case.assigned_to_id == assignee.pk:
            return case
        previous = case.assigned_to
        case.assigned_to = assignee
        case.save(update_fields=["assigned_to", "updated_at"])
        events.case_assigned_event(
            case=case,
            actor=actor,
            previous=previous.get_username() if previous else None,
            assignee=assignee.get_username(),
        )
    return case


# --- documents -------------------------------------------------------------------


class DocumentDecision:
    ACCEPT = "accept"
    REJECT = "reject"
    CHOICES = (
        (ACCEPT, _("Accept")),
        (REJECT, _("Reject")),
    )


def document_review(
    *, document_id: int, decision: str, note: str = "", actor
) -> Document:
    """Accept or reject one document of a case in review; reviewing again overrides.

    A rejection needs a note (the reason). Only the reviewer the case is
    assigned to may review its documents, and only while it is in review.
    """
    note = (note or "").strip()
    if decision not in (DocumentDecision.ACCEPT, DocumentDecision.REJECT):
        raise CaseActionError(_("Choose accept or reject."))
    if decision == DocumentDecision.REJECT and not note:
        raise CaseActionError(_("Say why the document is rejected."))
    _refuse_auditor(actor)
    if not roles.is_case_staff(actor):
        raise PermissionDenied(_("Your role does not allow reviewing documents."))
    case_id = (
        Document.objects.filter(pk=document_id)
        .values_list("case_id", flat=True)
        .first()
    )
    if case_id is None:
        raise CaseActionError(_("This document does not exist."))
    with transaction.atomic():
        case = case_lock(case_id=case_id)
        document = Document.objects.select_for_update().get(pk=document_id)
        if case.state != CaseState.IN_REVIEW:
            raise CaseActionError(
                _(
                    "Documents are reviewed while the case is in review; it is %(state)s."
                )
                % {"state": case.get_state_display()}
            )
        _refuse_unless_assignee(case, actor)
        if document.kind == Document.Kind.DATA_EXPORT:
            raise CaseActionError(_("The transaction export is not reviewed."))
        previous = document.review_status
        document.review_status = (
            Document.ReviewStatus.ACCEPTED
            if decision == DocumentDecision.ACCEPT
            else Document.ReviewStatus.REJECTED
        )
        document.review_note = note
        document.reviewed_by = actor
        document.reviewed_at = timezone.now()
        document.save(
            update_fields=["review_status", "review_note", "reviewed_by", "reviewed_at"]
        )
        events.document_reviewed_event(
            case=case,
            actor=actor,
            document_id=document.pk,
            kind=document.kind,
            name=document.original_name,
            decision=document.review_status,
            previous=previous,
            note=note,
        )
    return document


# --- fees ------------------------------------------------------------------------


def case_fees_statement_set(
    *, case_id: int, actor, text: str, amount: Decimal | None = None
) -> Case:
    """State the fees the unbinding will cost; shown to the merchant.

    ``amount`` (CNY, owed by the merchant) becomes a line of the final
    statement. Only the assignee, while the case is in review.
    """
    text = (text or "").strip()
    _refuse_auditor(actor)
    if not roles.is_case_staff(actor):
        raise PermissionDenied(_("Your role does not allow stating fees."))
    with transaction.atomic():
        case = case_lock(case_id=case_id)
        if case.state != CaseState.IN_REVIEW:
            raise CaseActionError(
                _("Fees are stated while the case is in review; it is %(state)s.")
                % {"state": case.get_state_display()}
            )
        _refuse_unless_assignee(case, actor)
        if amount is not None and amount < 0:
            raise CaseActionError(_("A fees amount cannot be negative."))
        if case.fees_statement == text and case.fees_amount == amount:
            return case
        case.fees_statement = text
        case.fees_amount = amount
        case.save(update_fields=["fees_statement", "fees_amount", "updated_at"])
        events.fees_stated_event(case=case, actor=actor, text=text, amount=amount)
    return case
