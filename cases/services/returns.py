"""Devices coming back after an unbinding: one ``DeviceReturn`` per device.

The life of a return (fsm transitions of ``DeviceReturn``)::

    awaiting_return ─ship─▶ shipped ─receive─▶ received ─inspect─▶ inspected
          │                    │                                   │
          └──receive───────────┘ (collected by staff)              ├─▶ in_stock
          └──report_lost (police report) ◀─┘                       └─▶ scrapped

Every change here locks the return row, applies one transition, saves it and
records a ``device_return`` event on the case that unbound the device, with
its actor (a staff user, ``"merchant"`` or None for the system), all in one
transaction. Notices go through the outbox after commit.

Who acts: the merchant ships or reports a device lost on the tracking page;
staff of the Operations group do all of it in the admin; an auditor changes
nothing.
"""

import logging
import re
from datetime import datetime, timedelta

from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _
from django_fsm import can_proceed

from cases import events, roles
from cases.models import (
    Case,
    DeviceReturn,
    DeviceReturnState,
    Document,
    Notification,
)
from cases.notifications import case_recipients, notification_queue
from cases.services.common import CaseActionError
from cases.services.finance import finance_items_release_for_terminal
from cases.uploads import CleanUpload
from terminals import services as registry
from terminals.models import Terminal

logger = logging.getLogger(__name__)

# Returns reminded per run of the beat job; the rest wait for the next run.
REMINDER_BATCH_SIZE = 500

# What a courier's tracking number looks like: letters, digits and dashes.
TRACKING_NUMBER_RE = re.compile(r"^[A-Za-z0-9-]{6,40}$")


def _due_days() -> int:
    return int(getattr(settings, "DEVICE_RETURN_DUE_DAYS", 14))


def _reminder_every() -> timedelta:
    return timedelta(days=int(getattr(settings, "DEVICE_RETURN_REMINDER_DAYS", 7)))


def _check_staff(actor) -> None:
    """Only the merchant, the system or Operations change a return; never an auditor."""
    if actor is None or actor == "merchant":
        return
    if roles.is_auditor(actor) or not roles.user_in_group(actor, roles.OPERATIONS):
        raise PermissionDenied(_("Only Operations can change a device return."))


def _lock(return_id: int) -> DeviceReturn:
    return (
        DeviceReturn.objects.select_for_update(of=("self",))
        .select_related("case", "case__merchant", "terminal")
        .get(pk=return_id)
    )


def _apply(
    *,
    device_return: DeviceReturn,
    name: str,
    actor,
    fields: tuple[str, ...] = (),
    note: str = "",
    details: dict | None = None,
    client_ip: str | None = None,
) -> None:
    """Apply transition ``name`` to a locked return, save it, record its event."""
    method = getattr(device_return, name)
    if not can_proceed(method):
        raise CaseActionError(
            _("This device is %(state)s; it cannot be changed that way now.")
            % {"state": device_return.get_state_display()}
        )
    from_state = device_return.state
    method()
    device_return.save(update_fields=["state", "updated_at", *fields])
    events.device_return_event(
        case=device_return.case,
        actor=actor,
        serial_number=device_return.terminal.serial_number,
        action=name,
        from_state=from_state,
        to_state=device_return.state,
        note=note,
        details=details,
        client_ip=client_ip,
    )


def device_returns_open(
    *, case: Case, terminals: list[Terminal], now: datetime
) -> list[DeviceReturn]:
    """Expect the unbound devices of ``case`` back within DEVICE_RETURN_DUE_DAYS.

    Called by the execution's unbind step; safe to call twice (one return per
    case and device). A replacement device stays with the merchant: nothing
    returns for it.
    """
    wanted = [t for t in terminals if t.pk != case.replacement_terminal_id]
    existing = {
        r.terminal_id: r for r in DeviceReturn.objects.filter(case=case).order_by("pk")
    }
    new = [
        DeviceReturn(case=case, terminal=t, due_at=now + timedelta(days=_due_days()))
        for t in wanted
        if t.pk not in existing
    ]
    if new:
        DeviceReturn.objects.bulk_create(new)
        # One event for the case, whatever its number of devices (chains).
        events.device_returns_opened_event(
            case=case,
            serial_numbers=[r.terminal.serial_number for r in new],
            due_at=new[0].due_at,
            note=gettext("Please send the unbound devices back within %(days)s days.")
            % {"days": _due_days()},
        )
    return [*existing.values(), *new]


def device_return_ship(
    *,
    return_id: int,
    courier: str,
    tracking_number: str,
    actor="merchant",
    client_ip: str | None = None,
) -> DeviceReturn:
    """Record that the device is on its way back, with its courier and tracking number."""
    _check_staff(actor)
    courier = (courier or "").strip()
    tracking_number = (tracking_number or "").strip()
    if not courier or len(courier) > 60:
        raise CaseActionError(_("Name the courier."))
    if not TRACKING_NUMBER_RE.match(tracking_number):
        raise CaseActionError(
            _("Enter the tracking number: 6 to 40 letters, digits or dashes.")
        )
    with transaction.atomic():
        device_return = _lock(return_id)
        device_return.courier = courier
        device_return.tracking_number = tracking_number
        device_return.shipped_at = timezone.now()
        _apply(
            device_return=device_return,
            name="ship",
            actor=actor,
            fields=("courier", "tracking_number", "shipped_at"),
            details={"courier": courier, "tracking_number": tracking_number},
            client_ip=client_ip,
        )
    return device_return


def device_return_receive(*, return_id: int, actor, note: str = "") -> DeviceReturn:
    """Record that Operations has the device; what waits for it may go on."""
    _check_staff(actor)
    with transaction.atomic():
        device_return = _lock(return_id)
        device_return.received_at = timezone.now()
        _apply(
            device_return=device_return,
            name="receive",
            actor=actor,
            fields=("received_at",),
            note=note,
        )
        _device_received_effects(device_return)
    return device_return


def _device_received_effects(device_return: DeviceReturn) -> None:
    """What the arrival of a device sets going (in the receiving transaction)."""
    deposit = device_return.terminal.deposit
    events.device_received_event(
        case=device_return.case,
        serial_number=device_return.terminal.serial_number,
        return_id=device_return.pk,
        deposit=None if deposit is None else str(deposit),
    )
    # A deposit refund that waits for the device (DEPOSIT_REFUND_WAITS_FOR_DEVICE)
    # is opened for finance now.
    finance_items_release_for_terminal(terminal_id=device_return.terminal_id)


def device_return_inspect(
    *, return_id: int, outcome: str, actor, note: str = ""
) -> DeviceReturn:
    """Record the inspection of a received device: refurbish it or scrap it."""
    _check_staff(actor)
    if outcome not in DeviceReturn.Outcome.values:
        raise CaseActionError(_("Choose refurbish or scrap."))
    with transaction.atomic():
        device_return = _lock(return_id)
        device_return.outcome = outcome
        device_return.inspection_note = note
        device_return.inspected_at = timezone.now()
        _apply(
            device_return=device_return,
            name="inspect",
            actor=actor,
            fields=("outcome", "inspection_note", "inspected_at"),
            note=note,
            details={"outcome": outcome},
        )
    return device_return


def device_return_finish(*, return_id: int, actor) -> DeviceReturn:
    """Put an inspected device back in stock (refurbished) or scrap it."""
    _check_staff(actor)
    with transaction.atomic():
        device_return = _lock(return_id)
        if device_return.state != DeviceReturnState.INSPECTED:
            raise CaseActionError(
                _("This device is %(state)s; it cannot be changed that way now.")
                % {"state": device_return.get_state_display()}
            )
        if device_return.outcome == DeviceReturn.Outcome.REFURBISHED:
            _apply(device_return=device_return, name="restock", actor=actor)
            try:
                registry.terminal_restock(
                    terminal=device_return.terminal, at=timezone.now()
                )
            except registry.RegistryError as exc:
                raise CaseActionError(exc.message) from exc
        else:
            _apply(device_return=device_return, name="scrap", actor=actor)
    return device_return


def device_return_report_lost(
    *,
    return_id: int,
    upload: CleanUpload,
    note: str = "",
    actor="merchant",
    client_ip: str | None = None,
) -> DeviceReturn:
    """Record a lost or stolen device with its police report (a checked upload)."""
    _check_staff(actor)
    name = ""
    try:
        with transaction.atomic():
            device_return = _lock(return_id)
            if not can_proceed(device_return.report_lost):
                raise CaseActionError(
                    _("This device is %(state)s; it cannot be changed that way now.")
                    % {"state": device_return.get_state_display()}
                )
            try:
                name = upload.store()
            except OSError as exc:  # disk full: nothing stored, nothing changed
                logger.error("could not store a police report: %s", exc)
                raise CaseActionError(
                    _(
                        "We could not store the police report just now. Please "
                        "try again in a few minutes."
                    )
                ) from exc
            document = Document.objects.create(
                case=device_return.case,
                kind=Document.Kind.POLICE_REPORT,
                file=name,
                original_name=upload.original_name,
                size=upload.size,
                sha256=upload.sha256,
                content_type=upload.content_type,
            )
            if actor == "merchant":
                events.document_added_event(
                    case=device_return.case,
                    document_id=document.pk,
                    kind=Document.Kind.POLICE_REPORT,
                    name=upload.original_name,
                    client_ip=client_ip,
                )
            device_return.police_report = document
            device_return.lost_reported_at = timezone.now()
            _apply(
                device_return=device_return,
                name="report_lost",
                actor=actor,
                fields=("police_report", "lost_reported_at"),
                note=note,
                details={"police_report": document.pk},
                client_ip=client_ip,
            )
    except BaseException:
        if name:
            Document._meta.get_field("file").storage.delete(name)
        raise
    finally:
        upload.discard()
    return device_return


def device_returns_remind(*, now: datetime | None = None) -> int:
    """Remind merchants of devices overdue; return how many cases were reminded.

    One notice (e-mail and SMS) per case, listing its overdue devices, at most
    once per DEVICE_RETURN_REMINDER_DAYS. Run by the beat job.
    """
    now = now or timezone.now()
    case_ids = list(
        DeviceReturn.objects.due_for_reminder(now=now, every=_reminder_every())
        .order_by("case_id")
        .values_list("case_id", flat=True)
        .distinct()[:REMINDER_BATCH_SIZE]
    )
    return sum(device_return_remind_case(case_id=pk, now=now) for pk in case_ids)


def device_return_remind_case(*, case_id: int, now: datetime) -> bool:
    """Queue one reminder for the overdue devices of a case, unless reminded lately."""
    with transaction.atomic():
        due = list(
            DeviceReturn.objects.due_for_reminder(now=now, every=_reminder_every())
            .select_for_update(of=("self",))
            .select_related("case", "case__merchant", "terminal")
            .filter(case_id=case_id)
            .order_by("terminal__serial_number")
        )
        if not due:
            return False
        case = due[0].case
        serials = [r.terminal.serial_number for r in due]
        notification_queue(
            kind=Notification.Kind.DEVICE_RETURN_REMINDER,
            recipients=case_recipients(case),
            case=case,
            dedupe_key=f"case:{case.pk}:device_return_reminder:{now:%Y%m%d}",
            context={
                "serial_numbers": serials,
                "due_on": timezone.localdate(min(r.due_at for r in due)).isoformat(),
                "return_address": settings.RETURN_ADDRESS,
            },
        )
        for device_return in due:
            device_return.reminded_at = now
            device_return.reminder_count += 1
            device_return.save(
                update_fields=["reminded_at", "reminder_count", "updated_at"]
            )
            events.device_return_event(
                case=case,
                actor=None,
                serial_number=device_return.terminal.serial_number,
                action="remind",
                note=gettext("Reminder sent: this device is overdue."),
                details={"reminder": device_return.reminder_count},
            )
    return True
