"""The permission matrix through the admin's HTTP layer: role × transition × state.

Every allowed transition works and writes its event; every refused one
answers 403 or a message and changes nothing: state, events and
notifications stay as they were.
"""

from http import HTTPStatus

import pytest
from django.contrib.messages import get_messages
from django.urls import reverse

from cases.actions import STAFF_ACTIONS
from cases.models import CaseEvent, CaseState, Notification
from tests import factories

pytestmark = pytest.mark.django_db

ROLES = (
    "reviewer",
    "second_reviewer",
    "approver",
    "operations",
    "auditor",
    "service",
    "agent",
)
# Every staff action of the table; the expected outcome below is written out
# independently of it.
TRANSITIONS = tuple(STAFF_ACTIONS)
TARGET = {
    "start_review": CaseState.IN_REVIEW,
    "request_info": CaseState.INFO_REQUESTED,
    "recommend": CaseState.AWAITING_APPROVAL,
    "send_back": CaseState.IN_REVIEW,
    "release": CaseState.SUBMITTED,
    "approve": CaseState.APPROVED,
    "reject": CaseState.REJECTED,
    "retry": CaseState.APPROVED,
    "abandon": CaseState.REJECTED,
}


def expected_allowed(role: str, state: str, name: str) -> bool:
    """The rules of issue 4, written out independently of the code under test.

    The case is assigned to ``reviewer``, who also recommended it when it is
    awaiting approval; for ``recommend`` every required document is accepted.
    """
    if role in ("auditor", "service"):
        return False
    if role == "agent":
        # Outsourcing rule: an agent (代理商), even one given every reviewing
        # group, is refused every staff action (docs/review.md).
        return False
    if name == "start_review":
        # Assigned (back from the merchant): its reviewer picks it up again.
        return state == CaseState.SUBMITTED and role == "reviewer"
    if name in ("request_info", "recommend", "release"):
        return state == CaseState.IN_REVIEW and role == "reviewer"
    if name == "reject":
        return (state == CaseState.IN_REVIEW and role == "reviewer") or (
            state == CaseState.AWAITING_APPROVAL and role == "approver"
        )
    if name in ("approve", "send_back"):
        return state == CaseState.AWAITING_APPROVAL and role == "approver"
    if name == "retry":
        return state == CaseState.FAILED and role == "operations"
    if name == "abandon":
        return state == CaseState.FAILED and role == "operations"
    raise AssertionError(name)


@pytest.fixture
def no_execution(monkeypatch):
    monkeypatch.setattr(
        "cases.services.execution.case_execution_dispatch", lambda *, case_id: None
    )


@pytest.mark.parametrize("name", TRANSITIONS)
@pytest.mark.parametrize("state", [s.value for s in CaseState])
@pytest.mark.parametrize("role", ROLES)
def test_permission_matrix(request, client, no_execution, role, state, name):
    # given
    reviewer = request.getfixturevalue("reviewer")
    user = request.getfixturevalue(role)
    case = factories.CaseFactory(
        state=state,
        assigned_to=reviewer,
        recommended_by=reviewer if state == CaseState.AWAITING_APPROVAL else None,
        failure_step="settle" if state == CaseState.FAILED else "",
    )
    if name == "recommend":
        factories.accepted_documents_for(case, reviewer=reviewer)
    events_before = CaseEvent.objects.filter(case=case).count()
    client.force_login(user)
    url = reverse("admin:cases_case_transition", args=[case.pk, name])

    # when
    confirm = client.get(url)
    response = client.post(url, {"note": "A note for the merchant."})

    # then
    case.refresh_from_db()
    if expected_allowed(role, state, name):
        assert confirm.status_code == HTTPStatus.OK
        assert response.status_code == HTTPStatus.FOUND
        assert response["Location"] == reverse(
            "admin:cases_case_change", args=[case.pk]
        )
        assert case.state == TARGET[name]
        event = CaseEvent.objects.get(
            case=case, type=CaseEvent.Type.TRANSITION, transition=name
        )
        assert event.actor == user
        assert (event.from_state, event.to_state) == (state, TARGET[name])
        if name in ("request_info", "reject", "abandon"):
            assert Notification.objects.filter(case=case).count() == 1
        else:
            assert not Notification.objects.filter(case=case).exists()
    else:
        assert case.state == state
        assert CaseEvent.objects.filter(case=case).count() == events_before
        assert not Notification.objects.filter(case=case).exists()
        for answer in (confirm, response):
            if answer.status_code == HTTPStatus.FORBIDDEN:
                assert "Nothing was changed." in answer.content.decode()
            else:
                assert answer.status_code == HTTPStatus.FOUND
                levels = {m.level_tag for m in get_messages(answer.wsgi_request)}
                assert levels == {"error"}


def test_a_staff_user_without_a_role_gets_403_and_nothing_changes(client):
    # given
    case = factories.CaseFactory(state=CaseState.SUBMITTED)
    staff = factories.UserFactory(username="intern", is_staff=True)
    client.force_login(staff)

    # when
    response = client.post(
        reverse("admin:cases_case_transition", args=[case.pk, "start_review"])
    )

    # then
    assert response.status_code == HTTPStatus.FORBIDDEN
    case.refresh_from_db()
    assert case.state == CaseState.SUBMITTED


def test_the_recommender_is_told_why_they_cannot_approve(client, approver, reviewer):
    # given
    case = factories.CaseFactory(
        state=CaseState.AWAITING_APPROVAL, assigned_to=reviewer, recommended_by=approver
    )
    factories.accepted_documents_for(case)
    client.force_login(approver)

    # when
    response = client.post(
        reverse("admin:cases_case_transition", args=[case.pk, "approve"]),
        {"note": ""},
    )

    # then
    assert response.status_code == HTTPStatus.FORBIDDEN
    assert "different approver" in response.content.decode()
    case.refresh_from_db()
    assert case.state == CaseState.AWAITING_APPROVAL
    assert case.approved_by is None


@pytest.mark.parametrize("role", ["reviewer", "second_reviewer", "approver"])
def test_any_reviewer_or_approver_starts_an_unassigned_case(request, client, role):
    # given
    user = request.getfixturevalue(role)
    case = factories.CaseFactory(state=CaseState.SUBMITTED)
    client.force_login(user)

    # when
    response = client.post(
        reverse("admin:cases_case_transition", args=[case.pk, "start_review"])
    )

    # then
    assert response.status_code == HTTPStatus.FOUND
    case.refresh_from_db()
    assert case.state == CaseState.IN_REVIEW
    assert case.assigned_to == user
