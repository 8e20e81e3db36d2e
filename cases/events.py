"""Audit events: one small function per kind of entry, the only writers of CaseEvent.

Call them inside the transaction of the change they record.
"""

from typing import Any

from cases.models import Case, CaseEvent


def _actor_fields(actor) -> dict[str, Any]:
    if actor is None:
        return {
            "actor_kind": CaseEvent.Actor.SYSTEM,
            "actor": None,
            "actor_label": "system",
        }
    if actor == "merchant":
        return {
            "actor_kind": CaseEvent.Actor.MERCHANT,
            "actor": None,
            "actor_label": "merchant",
        }
    return {
        "actor_kind": CaseEvent.Actor.STAFF,
        "actor": actor,
        "actor_label": actor.get_username(),
    }


def event_record(
    *,
    case: Case,
    type: str,
    actor=None,
    note: str = "",
    payload: dict | None = None,
    visible_to_merchant: bool = False,
    client_ip: str | None = None,
    from_state: str = "",
    to_state: str = "",
    transition: str = "",
) -> CaseEvent:
    """Insert one audit event. ``actor`` is a staff user, ``"merchant"`` or None (system)."""
    return CaseEvent.objects.create(
        case=case,
        type=type,
        note=note,
        payload=payload or {},
        visible_to_merchant=visible_to_merchant,
        client_ip=client_ip,
        from_state=from_state,
        to_state=to_state,
        transition=transition,
        **_actor_fields(actor),
    )


def transition_event(
    *,
    case: Case,
    name: str,
    from_state: str,
    actor=None,
    note: str = "",
    payload: dict | None = None,
    client_ip: str | None = None,
    visible_to_merchant: bool = True,
) -> CaseEvent:
    """Record a state change of ``case`` (already applied) made by ``actor``."""
    return event_record(
        case=case,
        type=CaseEvent.Type.TRANSITION,
        actor=actor,
        note=note,
        payload=payload,
        client_ip=client_ip,
        from_state=from_state,
        to_state=case.state,
        transition=name,
        visible_to_merchant=visible_to_merchant,
    )
