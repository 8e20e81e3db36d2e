"""Audit events: one function per kind of entry, the only writers of CaseEvent.

As Saleor's ``order/events.py``: each function names the payload of its kind
in its signature and returns the event it inserted. Call them inside the
transaction of the change they record. ``actor`` is a staff user,
``"merchant"`` or None (the system).
"""

from decimal import Decimal
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


def _event_build(
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
    """The unsaved event (see ``_event_insert``)."""
    return CaseEvent(
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


def _event_insert(**fields: Any) -> CaseEvent:
    event = _event_build(**fields)
    event.save(force_insert=True)
    return event


def case_filed_and_code_sent_events(
    *,
    case: Case,
    terminals: list[str],
    documents: int,
    reason: str,
    client_ip: str | None = None,
    channel: str = "web",
    filed_by=None,
) -> list[CaseEvent]:
    """Record a new case's filing and its first code, in one INSERT.

    The filing entry (by the merchant, or by ``filed_by`` — staff, an agent —
    for the merchant) and the ``code_sent_event`` entry, as a filing writes
    them.
    """
    return CaseEvent.objects.bulk_create(
        [
            _case_filed(
                case=case,
                terminals=terminals,
                documents=documents,
                reason=reason,
                client_ip=client_ip,
                channel=channel,
                filed_by=filed_by,
            ),
            _code_sent(case=case),
        ]
    )


def _case_filed(
    *,
    case: Case,
    terminals: list[str],
    documents: int,
    reason: str,
    client_ip: str | None,
    channel: str,
    filed_by,
) -> CaseEvent:
    payload = {"terminals": terminals, "documents": documents, "reason": reason}
    if channel != "web":
        payload["channel"] = channel
    return _event_build(
        case=case,
        type=CaseEvent.Type.FILED,
        actor=filed_by or "merchant",
        client_ip=client_ip,
        visible_to_merchant=True,
        to_state=case.state,
        payload=payload,
    )


def code_sent_event(
    *,
    case: Case,
    actor=None,
    sequence: int | None = None,
    client_ip: str | None = None,
) -> CaseEvent:
    """Record that a verification code went to the contact on file."""
    event = _code_sent(case=case, actor=actor, sequence=sequence, client_ip=client_ip)
    event.save(force_insert=True)
    return event


def _code_sent(
    *,
    case: Case,
    actor=None,
    sequence: int | None = None,
    client_ip: str | None = None,
) -> CaseEvent:
    payload: dict[str, Any] = {"to": "contact_on_file"}
    if sequence is not None:
        payload["sequence"] = sequence
    return _event_build(
        case=case,
        type=CaseEvent.Type.CODE_SENT,
        actor=actor,
        client_ip=client_ip,
        payload=payload,
    )


def code_failed_event(
    *, case: Case, attempts: int, client_ip: str | None = None
) -> CaseEvent:
    """Record a wrong verification code, the ``attempts``-th on this code."""
    return _event_insert(
        case=case,
        type=CaseEvent.Type.CODE_FAILED,
        actor="merchant",
        client_ip=client_ip,
        payload={"attempts": attempts},
    )


def code_refused_event(
    *, case: Case, refused: str, cap: int, client_ip: str | None = None
) -> CaseEvent:
    """Record a code refused unchecked because the merchant's daily cap is spent.

    It is a CODE_FAILED entry (it counts as a try against the cap) whose
    payload says why it was not checked.
    """
    return _event_insert(
        case=case,
        type=CaseEvent.Type.CODE_FAILED,
        actor="merchant",
        client_ip=client_ip,
        payload={"refused": refused, "cap": cap},
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
    return _event_insert(
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


def document_added_event(
    *,
    case: Case,
    document_id: int,
    kind: str,
    name: str,
    client_ip: str | None = None,
) -> CaseEvent:
    """Record a document the merchant added to ``case`` after filing."""
    return _event_insert(
        case=case,
        type=CaseEvent.Type.DOCUMENT_ADDED,
        actor="merchant",
        client_ip=client_ip,
        visible_to_merchant=True,
        payload={"document": document_id, "kind": kind, "name": name},
    )


def document_reviewed_event(
    *,
    case: Case,
    actor,
    document_id: int,
    kind: str,
    name: str,
    decision: str,
    previous: str,
    note: str = "",
) -> CaseEvent:
    """Record a reviewer's decision on one document (``previous`` status kept)."""
    return _event_insert(
        case=case,
        type=CaseEvent.Type.DOCUMENT_REVIEWED,
        actor=actor,
        note=note,
        payload={
            "document_id": document_id,
            "kind": kind,
            "name": name,
            "decision": decision,
            "previous": previous,
        },
    )


def message_event(
    *, case: Case, actor, note: str, client_ip: str | None = None
) -> CaseEvent:
    """Record a message the merchant wrote (shown on the tracking page)."""
    return _event_insert(
        case=case,
        type=CaseEvent.Type.MESSAGE,
        actor=actor,
        note=note,
        client_ip=client_ip,
        visible_to_merchant=True,
    )


def fees_stated_event(
    *, case: Case, actor, text: str, amount: Decimal | None = None
) -> CaseEvent:
    """Record the fees stated to the merchant: ``text`` (empty if withdrawn) and
    ``amount``, the line of the final statement (None when no amount is owed)."""
    return _event_insert(
        case=case,
        type=CaseEvent.Type.FEES_STATED,
        actor=actor,
        note=text,
        payload={"fees_amount": None if amount is None else str(amount)},
        visible_to_merchant=True,
    )


def case_assigned_event(
    *, case: Case, actor, previous: str | None, assignee: str
) -> CaseEvent:
    """Record that ``actor`` assigned ``case`` from ``previous`` to ``assignee``."""
    return _event_insert(
        case=case,
        type=CaseEvent.Type.ASSIGNED,
        actor=actor,
        payload={"from": previous, "to": assignee},
    )


def step_failed_event(*, case: Case, step: str, status: str, reason: str) -> CaseEvent:
    """Record an execution step that failed for good, with its reason."""
    return _event_insert(
        case=case,
        type=CaseEvent.Type.STEP,
        note=reason,
        payload={"step": step, "status": status},
    )


def step_waiting_event(
    *, case: Case, step: str, status: str, key: str, reference: str, note: str
) -> CaseEvent:
    """Record that the provider's core took a step and will answer later."""
    return _event_insert(
        case=case,
        type=CaseEvent.Type.STEP,
        note=note,
        payload={"step": step, "status": status, "key": key, "reference": reference},
    )


def step_answered_event(
    *, case: Case, step: str, key: str, reference: str, answer: str, note: str
) -> CaseEvent:
    """Record the core's final answer (``done`` or ``refused``) to a waiting step."""
    return _event_insert(
        case=case,
        type=CaseEvent.Type.STEP,
        note=note,
        payload={"step": step, "key": key, "reference": reference, "answer": answer},
    )


def terminal_batch_event(
    *, case: Case, step: str, key: str, done: int, refused: dict[str, str]
) -> CaseEvent:
    """Record one batch of a chain's terminals: how many done, which refused and why."""
    return _event_insert(
        case=case,
        type=CaseEvent.Type.STEP,
        note="; ".join(f"{sn}: {reason}" for sn, reason in sorted(refused.items())),
        payload={
            "step": step,
            "key": key,
            "done": done,
            "refused": sorted(refused),
        },
    )


def documents_purged_event(
    *, case: Case, document_ids: list[int], note: str
) -> CaseEvent:
    """Record that the stored files of these documents were deleted at retention."""
    return _event_insert(
        case=case,
        type=CaseEvent.Type.DOCUMENTS_PURGED,
        note=note,
        payload={"documents": document_ids},
    )


def demo_case_placed_events(*, case: Case, from_state: str) -> None:
    """Record a demo case's filing and the state it was placed in (seed_demo)."""
    _event_insert(
        case=case,
        type=CaseEvent.Type.FILED,
        actor="merchant",
        visible_to_merchant=True,
        to_state=from_state,
    )
    if case.state != from_state:
        _event_insert(
            case=case,
            type=CaseEvent.Type.TRANSITION,
            visible_to_merchant=True,
            from_state=from_state,
            to_state=case.state,
            transition="seed_demo",
            note="demo data",
        )


def device_return_event(
    *,
    case: Case,
    actor,
    serial_number: str,
    action: str,
    from_state: str = "",
    to_state: str = "",
    note: str = "",
    details: dict | None = None,
    client_ip: str | None = None,
) -> CaseEvent:
    """Record a change of the return of device ``serial_number`` (``action``).

    Shown on the merchant's timeline: the merchant follows the device back.
    """
    return _event_insert(
        case=case,
        type=CaseEvent.Type.DEVICE_RETURN,
        actor=actor,
        note=note,
        client_ip=client_ip,
        visible_to_merchant=True,
        from_state=from_state,
        to_state=to_state,
        transition=action,
        payload={"serial_number": serial_number, **(details or {})},
    )


def device_returns_opened_event(
    *, case: Case, serial_numbers: list[str], due_at, note: str
) -> CaseEvent:
    """Record that the devices unbound by ``case`` are expected back by ``due_at``."""
    return _event_insert(
        case=case,
        type=CaseEvent.Type.DEVICE_RETURN,
        note=note,
        visible_to_merchant=True,
        to_state="awaiting_return",
        transition="open",
        payload={"serial_numbers": serial_numbers, "due_at": due_at.isoformat()},
    )


def device_received_event(
    *, case: Case, serial_number: str, return_id: int, deposit: str | None
) -> CaseEvent:
    """Record that a returned device arrived: what waits for it may now go on."""
    return _event_insert(
        case=case,
        type=CaseEvent.Type.DEVICE_RECEIVED,
        payload={
            "serial_number": serial_number,
            "device_return": return_id,
            "deposit": deposit,
        },
    )


def legal_hold_event(*, case: Case, actor, hold, placed: bool) -> CaseEvent:
    """Record that a legal hold covering this case was placed or released."""
    return _event_insert(
        case=case,
        type=CaseEvent.Type.LEGAL_HOLD,
        actor=actor,
        note=hold.reason,
        payload={
            "hold": hold.pk,
            "on": "case" if hold.case_id else "merchant",
            "action": "placed" if placed else "released",
        },
    )


def identity_checked_event(
    *,
    case: Case,
    actor,
    note: str,
    document_ids: list[int],
    client_ip: str | None = None,
) -> CaseEvent:
    """Record that ``actor`` checked the merchant's identity offline, with evidence."""
    return _event_insert(
        case=case,
        type=CaseEvent.Type.IDENTITY_CHECKED,
        actor=actor,
        note=note,
        client_ip=client_ip,
        payload={"documents": document_ids},
    )


def statement_frozen_event(*, case: Case, actor, version: int, net: str) -> CaseEvent:
    """Record that ``case``'s final statement was frozen as ``version`` at approval."""
    return _event_insert(
        case=case,
        type=CaseEvent.Type.STATEMENT_FROZEN,
        actor=actor,
        payload={"version": version, "net": net},
    )


def finance_item_event(
    *,
    case: Case,
    actor,
    item_id: int,
    kind: str,
    amount: str,
    from_state: str,
    to_state: str,
    reference: str = "",
    reason: str = "",
    visible_to_merchant: bool = False,
) -> CaseEvent:
    """Record a change of one finance item (created, released, recorded, paid...)."""
    return _event_insert(
        case=case,
        type=CaseEvent.Type.FINANCE,
        actor=actor,
        note=reason,
        visible_to_merchant=visible_to_merchant,
        # The item's states, not the case's: kept out of from_state/to_state.
        payload={
            "from": from_state,
            "to": to_state,
            "item": item_id,
            "kind": kind,
            "amount": amount,
            "reference": reference,
        },
    )
