"""Locking a case and applying one fsm transition with its audit event."""

from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from django_fsm import can_proceed, has_transition_perm

from cases import events
from cases.models import CLOSED_STATES, Case, CaseEvent, CaseTerminal
from webhooks.services import webhook_case_transition


class CaseActionError(Exception):
    """A use case refused to act; ``message`` is safe to show to the user."""

    def __init__(self, message):
        super().__init__(message)
        self.message = message


def case_lock(*, case_id: int) -> Case:
    """Return the case row locked for update (call inside a transaction)."""
    return Case.objects.select_for_update().get(pk=case_id)


def case_apply_transition(
    *,
    case: Case,
    name: str,
    actor=None,
    note: str = "",
    client_ip: str | None = None,
    payload: dict | None = None,
    update_fields: tuple[str, ...] = (),
    visible_to_merchant: bool = True,
) -> CaseEvent:
    """Apply transition ``name`` to a locked ``case``, save it and return its event.

    ``actor`` is a staff user (checked against the transition's permission),
    ``"merchant"`` or None for the system. Raises ``CaseActionError`` when the
    state does not allow it and ``PermissionDenied`` when the user may not.
    """
    assert transaction.get_connection().in_atomic_block, (
        "call inside transaction.atomic"
    )
    method = getattr(case, name)
    if not can_proceed(method, check_conditions=False):
        raise CaseActionError(
            _("This case is %(state)s; it cannot be changed that way now.")
            % {"state": case.get_state_display()}
        )
    is_staff_actor = actor is not None and actor != "merchant"
    if is_staff_actor and not has_transition_perm(method, actor):
        raise PermissionDenied(_("You are not allowed to do this on this case."))
    if not can_proceed(method):
        raise CaseActionError(_("The conditions for this step are not met yet."))

    from_state = case.state
    method()
    fields = {"state", "updated_at", *update_fields}
    if case.state in CLOSED_STATES:
        case.closed_at = timezone.now()
        fields.add("closed_at")
        # Free the terminals for a new request.
        CaseTerminal.objects.filter(case=case, is_open=True).update(is_open=False)
    case.save(update_fields=sorted(fields))
    # Same transaction: a rolled-back change announces nothing.
    webhook_case_transition(case=case, from_state=from_state)
    return events.transition_event(
        case=case,
        name=name,
        from_state=from_state,
        actor=actor,
        note=note,
        payload=payload,
        client_ip=client_ip,
        visible_to_merchant=visible_to_merchant,
    )
