"""The staff actions on a case: one declarative table that everything reads.

The fsm transitions of ``cases.models`` say which state goes where; this
table says everything else about an action staff take on a case, once: its
button and confirmation text, whether a note is required, who may do it,
whether it is irreversible, the fields it sets and what is queued after
commit. ``cases.models`` takes each transition's ``permission=`` from here,
``cases.services.review.case_transition`` applies the rest, the admin draws
its buttons and confirmation pages from it, and the permission matrix test
iterates over it. ``docs/architecture.md`` shows how to add an action.

The module imports no model, so that ``cases.models`` can import it.
"""

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.utils.functional import Promise
from django.utils.translation import gettext_lazy as _

from cases import roles


def _sets_nothing(*, actor, now: datetime, note: str) -> dict[str, Any]:
    return {}


@dataclass(frozen=True)
class StaffAction:
    """One action staff take on a case: the fsm transition method of the same name."""

    name: str
    # The button, and the confirmation page's title.
    label: Promise
    # What the confirmation page says will happen.
    effect: Promise
    # Visual weight of the button (CSS modifier in static/admin_cases/admin.css).
    style: str = "default"
    # The note is shown to the merchant and e-mailed, so it cannot be blank.
    # Any other note stays staff-only: that event is hidden from the merchant.
    note_required: bool = False
    # Who may do it: a member of any of these groups (never an auditor) ...
    groups: tuple[str, ...] = (roles.REVIEWER, roles.APPROVER)
    # ... and, while the case is in review, only the user it is assigned to.
    assignee_only: bool = False
    # A case that already has an assignee stays with them (back from the
    # merchant) unless someone takes it over explicitly first.
    keeps_assignee: bool = False
    # Maker-checker: never the user who recommended the case.
    not_by_recommender: bool = False
    # The confirmation page warns that it cannot be undone.
    irreversible: bool = False
    # The confirmation page shows the impact summary (terminals, funds, ...).
    shows_impact: bool = False
    # The case fields it sets besides the state (saved with the transition).
    sets: Callable[..., dict[str, Any]] = field(default=_sets_nothing)
    # The notice (a ``Notification.Kind``) queued with the note after commit.
    notifies: str = ""
    # Approval and retry hand the case to the background execution.
    starts_execution: bool = False
    # The confirmation page lists the execution steps already done and what
    # becomes of each terminal (kept bound or already released).
    shows_steps: bool = False
    # Store the case's final statement as a new frozen version (approval).
    freezes_statement: bool = False

    def permits(self, case, user) -> bool:
        """Tell whether ``user``'s role allows this action on ``case`` (the fsm permission).

        An agent (代理商) is refused every action, whatever its other groups.
        """
        if roles.is_agent(user):
            return False
        if self.not_by_recommender and case.recommended_by_id == user.pk:
            return False
        return any(roles.user_in_group(user, group) for group in self.groups)


# In the order the buttons are shown.
STAFF_ACTIONS: dict[str, StaffAction] = {
    action.name: action
    for action in (
        StaffAction(
            name="start_review",
            label=_("Start review"),
            effect=_(
                "The case moves to “In review” and is assigned to you. You then "
                "check each document and decide."
            ),
            style="primary",
            keeps_assignee=True,
            sets=lambda *, actor, now, note: {"assigned_to": actor},
        ),
        StaffAction(
            name="request_info",
            label=_("Request information"),
            effect=_(
                "The case moves to “Information requested”. Your note is shown to "
                "the merchant on the tracking page and e-mailed to the contact on "
                "file and the applicant. The case returns to the queue when the "
                "merchant answers."
            ),
            note_required=True,
            assignee_only=True,
            sets=lambda *, actor, now, note: {
                "info_requested_at": now,
                "info_reminded_at": None,
            },
            notifies="info_requested",
        ),
        StaffAction(
            name="release",
            label=_("Release to the queue"),
            effect=_(
                "The case goes back to the queue unassigned, for any reviewer to "
                "start. The documents you reviewed keep their decisions."
            ),
            assignee_only=True,
            sets=lambda *, actor, now, note: {"assigned_to": None},
        ),
        StaffAction(
            name="recommend",
            label=_("Recommend approval"),
            effect=_(
                "The case moves to “Awaiting approval”. An approver other than you "
                "must approve it before anything is unbound."
            ),
            style="primary",
            assignee_only=True,
            sets=lambda *, actor, now, note: {"recommended_by": actor},
        ),
        StaffAction(
            name="send_back",
            label=_("Send back to review"),
            effect=_(
                "The recommendation is withdrawn and the case goes back to “In "
                "review” for the reviewer."
            ),
            groups=(roles.APPROVER,),
            sets=lambda *, actor, now, note: {"recommended_by": None},
        ),
        StaffAction(
            name="approve",
            label=_("Approve and unbind"),
            effect=_(
                "The case is approved and the unbinding starts in the background "
                "right away: bindings checked, funds settled, history exported, "
                "terminals unbound. This cannot be undone. Read the impact below "
                "first."
            ),
            style="primary",
            groups=(roles.APPROVER,),
            not_by_recommender=True,
            irreversible=True,
            shows_impact=True,
            sets=lambda *, actor, now, note: {
                "approved_by": actor,
                "approved_at": now,
                "execution_queued_at": now,
            },
            starts_execution=True,
            freezes_statement=True,
        ),
        StaffAction(
            name="reject",
            label=_("Reject"),
            effect=_(
                "The case is closed as rejected and its terminals become free for "
                "a new request. Your note is shown to the merchant and e-mailed. "
                "This cannot be undone."
            ),
            style="danger",
            note_required=True,
            assignee_only=True,
            irreversible=True,
            sets=lambda *, actor, now, note: {"decision_note": note},
            notifies="rejected",
        ),
        StaffAction(
            name="retry",
            label=_("Retry execution"),
            effect=_(
                "The execution resumes in the background from the step that "
                "failed. Steps already done are not repeated."
            ),
            style="primary",
            groups=(roles.OPERATIONS,),
            shows_impact=True,
            sets=lambda *, actor, now, note: {
                "failure_step": "",
                "failure_reason": "",
                "execution_queued_at": now,
            },
            starts_execution=True,
        ),
        StaffAction(
            name="abandon",
            label=_("Abandon the case"),
            effect=_(
                "The failed case is closed as not carried out and its terminals "
                "become free for a new request. The steps already done stay done: "
                "a terminal already unbound stays unbound, the others stay bound "
                "to the merchant. Your note is shown to the merchant and sent by "
                "e-mail and SMS. This cannot be undone."
            ),
            style="danger",
            note_required=True,
            groups=(roles.OPERATIONS,),
            irreversible=True,
            shows_steps=True,
            sets=lambda *, actor, now, note: {"decision_note": note},
            notifies="abandoned",
        ),
    )
}


def staff_action_permission(name: str) -> Callable[[Any, Any], bool]:
    """Return the fsm ``permission=`` of the transition ``name``, read from the table."""
    return STAFF_ACTIONS[name].permits
