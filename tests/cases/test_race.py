"""Two staff acting on one case at the same moment: exactly one wins.

Needs PostgreSQL: the row lock of ``case_lock`` (SELECT … FOR UPDATE) is what
serialises them; SQLite locks the whole database instead.
"""

import threading

import pytest
from django.core.exceptions import PermissionDenied
from django.db import connection

from cases.models import CaseEvent, CaseState
from cases.services import review
from cases.services.common import CaseActionError
from tests import factories

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def _race(calls) -> list:
    """Run ``calls`` in threads released together; return each one's outcome."""
    barrier = threading.Barrier(len(calls))
    outcomes: list = [None] * len(calls)

    def run(index, call):
        try:
            barrier.wait(timeout=10)
            outcomes[index] = call()
        except (CaseActionError, PermissionDenied) as exc:
            outcomes[index] = exc
        finally:
            connection.close()

    threads = [
        threading.Thread(target=run, args=(i, call)) for i, call in enumerate(calls)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    return outcomes


@pytest.fixture
def dispatched(monkeypatch):
    calls: list[int] = []
    monkeypatch.setattr(
        "cases.services.execution.case_execution_dispatch",
        lambda *, case_id: calls.append(case_id),
    )
    return calls


def test_two_approvers_approving_at_once_one_wins(dispatched):
    # given
    reviewer = factories.UserFactory(username="r1")
    first = factories.UserFactory(username="a1", is_superuser=True)
    second = factories.UserFactory(username="a2", is_superuser=True)
    case = factories.CaseFactory(
        state=CaseState.AWAITING_APPROVAL, assigned_to=reviewer, recommended_by=reviewer
    )
    factories.accepted_documents_for(case)

    # when
    outcomes = _race(
        [
            lambda: review.case_transition(
                case_id=case.pk, name="approve", actor=first
            ),
            lambda: review.case_transition(
                case_id=case.pk, name="approve", actor=second
            ),
        ]
    )

    # then
    errors = [o for o in outcomes if isinstance(o, CaseActionError)]
    wins = [o for o in outcomes if not isinstance(o, Exception)]
    assert len(wins) == 1
    assert len(errors) == 1
    assert "Approved" in str(errors[0].message)
    case.refresh_from_db()
    assert case.state == CaseState.APPROVED
    assert case.approved_by_id == wins[0].approved_by_id
    assert CaseEvent.objects.filter(case=case, transition="approve").count() == 1
    assert dispatched == [case.pk]


def test_approve_and_send_back_at_once_one_wins(dispatched):
    # given
    reviewer = factories.UserFactory(username="r1")
    first = factories.UserFactory(username="a1", is_superuser=True)
    second = factories.UserFactory(username="a2", is_superuser=True)
    case = factories.CaseFactory(
        state=CaseState.AWAITING_APPROVAL, assigned_to=reviewer, recommended_by=reviewer
    )
    factories.accepted_documents_for(case)

    # when
    outcomes = _race(
        [
            lambda: review.case_transition(
                case_id=case.pk, name="approve", actor=first
            ),
            lambda: review.case_transition(
                case_id=case.pk, name="send_back", actor=second
            ),
        ]
    )

    # then
    assert sum(isinstance(o, CaseActionError) for o in outcomes) == 1
    case.refresh_from_db()
    assert case.state in (CaseState.APPROVED, CaseState.IN_REVIEW)
    transitions = list(
        CaseEvent.objects.filter(case=case, type="transition").values_list(
            "transition", flat=True
        )
    )
    assert len(transitions) == 1
    assert dispatched == ([case.pk] if case.state == CaseState.APPROVED else [])


def test_two_reviewers_starting_review_at_once_one_gets_the_case():
    # given
    first = factories.UserFactory(username="r1", is_superuser=True)
    second = factories.UserFactory(username="r2", is_superuser=True)
    case = factories.CaseFactory(state=CaseState.SUBMITTED)

    # when
    outcomes = _race(
        [
            lambda: review.case_transition(
                case_id=case.pk, name="start_review", actor=first
            ),
            lambda: review.case_transition(
                case_id=case.pk, name="start_review", actor=second
            ),
        ]
    )

    # then
    [win] = [o for o in outcomes if not isinstance(o, Exception)]
    assert sum(isinstance(o, CaseActionError) for o in outcomes) == 1
    case.refresh_from_db()
    assert case.state == CaseState.IN_REVIEW
    assert case.assigned_to_id == win.assigned_to_id
    assert CaseEvent.objects.filter(case=case).count() == 1
