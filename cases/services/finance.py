"""Money after approval: the frozen statement and finance's work items.

- ``case_statement_freeze``: at approval, in the approval's transaction, the
  case's statement is stored as a new immutable ``CaseStatement`` version
  with its audit event. Pages and the completion e-mail show the latest
  frozen version once there is one (``case_statement_current``).
- ``finance_items_create``: when the case completes (in the transaction of
  the ``complete`` transition), one ``FinanceItem`` per line of the latest
  frozen statement that moves money, except the funds lines (the execution's
  settlement step pays those). The chargeback reserve's item is its release
  to the merchant, due on the release date. A deposit refund whose condition
  is the device's return waits (``waiting``) while
  ``DEPOSIT_REFUND_WAITS_FOR_DEVICE`` is on, until
  ``finance_items_release_for_terminal`` is called for its terminal.
- ``finance_item_pay`` / ``finance_item_confirm``: a Finance user marks an
  item paid with the payment reference; above ``FINANCE_DUAL_CONTROL_ABOVE``
  the first user only records it and a different Finance user confirms it
  (maker-checker). ``finance_item_close`` waives or cancels with a reason.

Each change locks the item, writes its audit event in the same transaction,
and, when money moved to or from the merchant, queues the merchant's notice
(e-mail and SMS outbox) after commit.
"""

from datetime import date, timedelta
from decimal import Decimal

from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.db.models import JSONField, Max, OuterRef, Q, QuerySet, Subquery
from django.utils import timezone, translation
from django.utils.translation import gettext_lazy as _

from cases import events, roles
from cases.models import Case, CaseStatement, FinanceItem, Notification
from cases.notifications import notification_queue
from cases.services.common import CaseActionError
from cases.statements import LineKind, Statement, case_statement
from terminals.models import Terminal

State = FinanceItem.State

# Lines paid by the execution itself (the settlement step), not by finance.
NOT_FINANCE_LINES = frozenset({LineKind.UNSETTLED_FUNDS, LineKind.SETTLED_FUNDS})


# --- the frozen statement ----------------------------------------------------------


def case_statement_freeze(*, case: Case, actor) -> CaseStatement:
    """Store ``case``'s statement as its next version (call inside the approval)."""
    with translation.override(case.language):
        statement = case_statement(case=case)
        data = statement.as_dict()
    last = case.statements.aggregate(last=Max("version"))["last"] or 0
    frozen = CaseStatement.objects.create(case=case, version=last + 1, data=data)
    events.statement_frozen_event(
        case=case, actor=actor, version=frozen.version, net=str(statement.net)
    )
    return frozen


def case_statement_latest(*, case: Case) -> CaseStatement | None:
    return case.statements.order_by("-version").first()


def cases_with_latest_statement(queryset: QuerySet) -> QuerySet:
    """Annotate each case with its latest frozen statement's version and data.

    For ``case_statement_shown``: one read with the case instead of a query.
    """
    latest = CaseStatement.objects.filter(case=OuterRef("pk")).order_by("-version")
    return queryset.annotate(
        latest_statement_version=Subquery(latest.values("version")[:1]),
        latest_statement_data=Subquery(
            latest.values("data")[:1], output_field=JSONField()
        ),
    )


def case_statement_shown(*, case: Case, terminals=None) -> Statement:
    """``case_statement_current``'s statement for a case from
    ``cases_with_latest_statement``; ``terminals``: the case's terminals when
    already read (see ``case_statement_input``).
    """
    if case.latest_statement_version is not None:
        return Statement.from_dict(
            case.latest_statement_data, version=case.latest_statement_version
        )
    return case_statement(case=case, terminals=terminals)


def case_statement_current(*, case: Case) -> tuple[Statement, CaseStatement | None]:
    """The statement to show: the latest frozen version, else the live one."""
    frozen = case_statement_latest(case=case)
    if frozen is not None:
        return Statement.from_dict(frozen.data, version=frozen.version), frozen
    return case_statement(case=case), None


# --- finance items ------------------------------------------------------------------


def finance_items_create(*, case: Case) -> list[FinanceItem]:
    """Create the finance items of ``case``'s latest frozen statement (idempotent)."""
    frozen = case_statement_latest(case=case)
    if frozen is None or frozen.finance_items.exists():
        return []
    today = timezone.localdate()
    wait = settings.DEPOSIT_REFUND_WAITS_FOR_DEVICE
    items = []
    for position, line in enumerate(frozen.data["lines"]):
        amount = Decimal(line["amount"])
        if line["kind"] in NOT_FINANCE_LINES or amount <= 0:
            continue
        direction = line["direction"]
        due_on = today
        if line["kind"] == LineKind.RESERVE:
            # Held back now; the item is paying it out on its release date.
            direction = FinanceItem.Direction.TO_MERCHANT
            due_on = date.fromisoformat(line["due_on"])
        waits = wait and line.get("condition") == "device_returned"
        items.append(
            FinanceItem(
                case=case,
                statement=frozen,
                line=position,
                kind=line["kind"],
                serial_number=line.get("serial_number", ""),
                direction=direction,
                amount=amount,
                state=State.WAITING if waits else State.OPEN,
                due_on=due_on,
            )
        )
    created = FinanceItem.objects.bulk_create(items)
    for item in created:
        events.finance_item_event(
            case=case,
            actor=None,
            item_id=item.pk,
            kind=item.kind,
            amount=str(item.amount),
            from_state="",
            to_state=item.state,
        )
    return created


def finance_items_release_for_terminal(*, terminal_id: int) -> list[FinanceItem]:
    """Open the deposit refunds waiting for terminal ``terminal_id``'s device.

    The device-return workflow calls this once the device is received. Safe
    to call twice: only items still ``waiting`` change.
    """
    serial = Terminal.objects.values_list("serial_number", flat=True).get(
        pk=terminal_id
    )
    released = []
    with transaction.atomic():
        items = (
            FinanceItem.objects.select_for_update()
            .filter(serial_number=serial, state=State.WAITING)
            .select_related("case")
            .order_by("pk")
        )
        for item in items:
            item.state = State.OPEN
            item.due_on = timezone.localdate()
            item.save(update_fields=["state", "due_on", "updated_at"])
            events.finance_item_event(
                case=item.case,
                actor=None,
                item_id=item.pk,
                kind=item.kind,
                amount=str(item.amount),
                from_state=State.WAITING,
                to_state=State.OPEN,
            )
            released.append(item)
    return released


def _lock(item_id: int) -> FinanceItem:
    return (
        FinanceItem.objects.select_for_update(of=("self",))
        .select_related("case", "case__merchant")
        .get(pk=item_id)
    )


def _refuse_unless_finance(actor) -> None:
    if roles.is_auditor(actor) or not roles.user_in_group(actor, roles.FINANCE):
        raise PermissionDenied(_("Only the Finance group pays finance items."))


def needs_second_user(item: FinanceItem) -> bool:
    return item.amount > settings.FINANCE_DUAL_CONTROL_ABOVE


def finance_item_pay(*, item_id: int, actor, reference: str) -> FinanceItem:
    """Mark the item paid with ``reference``; above the limit, record it to confirm."""
    _refuse_unless_finance(actor)
    reference = (reference or "").strip()
    if not reference:
        raise CaseActionError(_("Enter the payment reference."))
    with transaction.atomic():
        item = _lock(item_id)
        if item.state != State.OPEN:
            raise CaseActionError(
                _("This item is %(state)s; it cannot be paid now.")
                % {"state": item.get_state_display()}
            )
        if item.due_on > timezone.localdate():
            raise CaseActionError(
                _("This item falls due on %(date)s.") % {"date": item.due_on}
            )
        now = timezone.now()
        item.payment_reference = reference
        item.recorded_by = actor
        item.recorded_at = now
        if needs_second_user(item):
            item.state = State.RECORDED
        else:
            item.state = State.PAID
            item.paid_by = actor
            item.paid_at = now
        item.save()
        events.finance_item_event(
            case=item.case,
            actor=actor,
            item_id=item.pk,
            kind=item.kind,
            amount=str(item.amount),
            from_state=State.OPEN,
            to_state=item.state,
            reference=reference,
        )
        if item.state == State.PAID:
            _notify_money_moved(item)
    return item


def finance_item_confirm(*, item_id: int, actor) -> FinanceItem:
    """Confirm a payment another Finance user recorded (maker-checker)."""
    _refuse_unless_finance(actor)
    with transaction.atomic():
        item = _lock(item_id)
        if item.state != State.RECORDED:
            raise CaseActionError(_("Only a recorded payment can be confirmed."))
        if item.recorded_by_id == actor.pk:
            raise PermissionDenied(
                _("You recorded this payment; a different finance user confirms it.")
            )
        item.state = State.PAID
        item.paid_by = actor
        item.paid_at = timezone.now()
        item.save(update_fields=["state", "paid_by", "paid_at", "updated_at"])
        events.finance_item_event(
            case=item.case,
            actor=actor,
            item_id=item.pk,
            kind=item.kind,
            amount=str(item.amount),
            from_state=State.RECORDED,
            to_state=State.PAID,
            reference=item.payment_reference,
        )
        _notify_money_moved(item)
    return item


def finance_item_close(*, item_id: int, actor, state: str, reason: str) -> FinanceItem:
    """Waive or cancel an item not yet paid, with a reason."""
    _refuse_unless_finance(actor)
    reason = (reason or "").strip()
    if state not in (State.WAIVED, State.CANCELLED):
        raise CaseActionError(_("Unknown action."))
    if not reason:
        raise CaseActionError(_("Write the reason."))
    with transaction.atomic():
        item = _lock(item_id)
        if item.state not in FinanceItem.OPEN_STATES:
            raise CaseActionError(
                _("This item is %(state)s; it cannot be changed now.")
                % {"state": item.get_state_display()}
            )
        previous = item.state
        item.state = state
        item.reason = reason
        item.save(update_fields=["state", "reason", "updated_at"])
        events.finance_item_event(
            case=item.case,
            actor=actor,
            item_id=item.pk,
            kind=item.kind,
            amount=str(item.amount),
            from_state=previous,
            to_state=state,
            reason=reason,
        )
    return item


def _notify_money_moved(item: FinanceItem) -> None:
    case = item.case
    if not case.merchant.contact_email:
        return
    notification_queue(
        kind=Notification.Kind.MONEY_MOVED,
        recipients=[case.merchant.contact_email],
        case=case,
        context={
            "kind": item.kind,
            "direction": item.direction,
            "amount": str(item.amount),
            "reference": item.payment_reference,
            "serial_number": item.serial_number,
        },
        dedupe_key=f"finance_item:{item.pk}:paid",
    )


# --- reads --------------------------------------------------------------------------


def finance_items_overdue(*, today: date | None = None) -> QuerySet[FinanceItem]:
    """Refunds still unpaid ``FINANCE_REFUND_OVERDUE_DAYS`` after they fell due."""
    today = today or timezone.localdate()
    limit = today - timedelta(days=settings.FINANCE_REFUND_OVERDUE_DAYS)
    return FinanceItem.objects.filter(
        Q(state=State.OPEN) | Q(state=State.RECORDED),
        direction=FinanceItem.Direction.TO_MERCHANT,
        due_on__lt=limit,
    )


def finance_dashboard_counts() -> dict[str, int]:
    """What the staff dashboard shows finance: overdue refunds, payments to confirm."""
    return {
        "overdue": finance_items_overdue().count(),
        "to_confirm": FinanceItem.objects.filter(state=State.RECORDED).count(),
        "open": FinanceItem.objects.filter(state=State.OPEN).count(),
    }
