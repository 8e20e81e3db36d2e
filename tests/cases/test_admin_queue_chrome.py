"""The queue's page around its rows: the filter column kept per language and
query string, and a staff user's groups and permissions read in one query."""

import pytest
from django.contrib.auth.models import Group, Permission
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from cases import roles
from cases.models import CaseState
from tests import factories

pytestmark = pytest.mark.django_db


def _queue_url(query: str = "") -> str:
    return reverse("admin:cases_case_changelist") + (f"?{query}" if query else "")


def _filter_column(html: str) -> str:
    start = html.index('<nav id="changelist-filter"')
    return html[start : html.index("</nav>", start)]


def test_the_filter_column_follows_the_language_and_the_query_string(client, reviewer):
    # given
    client.force_login(reviewer)
    factories.CaseFactory(state=CaseState.SUBMITTED)

    # when: each page twice (the second from the kept column)
    english = [
        client.get(_queue_url("state__exact=submitted"), HTTP_ACCEPT_LANGUAGE="en")
        for _ in range(2)
    ]
    chinese = [
        client.get(_queue_url("state__exact=submitted"), HTTP_ACCEPT_LANGUAGE="zh-hans")
        for _ in range(2)
    ]
    other = client.get(_queue_url("overdue=yes"), HTTP_ACCEPT_LANGUAGE="en")

    # then
    en = [_filter_column(r.content.decode()) for r in english]
    zh = [_filter_column(r.content.decode()) for r in chinese]
    assert en[0] == en[1]
    assert zh[0] == zh[1]
    assert "review due" in en[0]
    assert "审核期限" in zh[0]
    assert "审核期限" not in en[0]
    assert "review due" not in zh[0]
    # the selected choice and the links keep the query string of their page
    assert 'class="selected"' in en[0]
    assert "?overdue=yes&amp;state__exact=submitted" in en[0]
    other_column = _filter_column(other.content.decode())
    assert "Clear all filters" in other_column
    assert "?overdue=yes&amp;state__exact=submitted" in other_column
    assert other_column != en[0]


def test_a_group_change_counts_from_the_next_request(client, reviewer):
    # given: a reviewer working the queue
    client.force_login(reviewer)
    assert client.get(_queue_url()).status_code == 200

    # when: taken out of the Reviewer group (and so of its permissions)
    reviewer.groups.remove(Group.objects.get(name=roles.REVIEWER))

    # then: the next page is refused
    assert client.get(_queue_url()).status_code == 403


def test_a_permission_given_to_the_user_counts_like_a_group_permission(
    client, reviewer
):
    # given: no group, only the view permission on cases given to the user
    reviewer.groups.clear()
    reviewer.user_permissions.add(Permission.objects.get(codename="view_case"))
    client.force_login(reviewer)

    # when
    response = client.get(_queue_url())

    # then: the list is shown, without the reviewers' action
    assert response.status_code == 200
    assert "assign_to_me" not in response.content.decode()


def test_groups_and_permissions_are_read_in_one_query(client, reviewer):
    # given
    client.force_login(reviewer)
    client.get(_queue_url())

    # when
    with CaptureQueriesContext(connection) as queries:
        response = client.get(_queue_url())

    # then: one statement reads the user's groups and permissions
    assert response.status_code == 200
    auth = [
        q["sql"]
        for q in queries.captured_queries
        if "auth_permission" in q["sql"] or "auth_group" in q["sql"]
    ]
    assert len(auth) == 1, auth
    assert "assign_to_me" in response.content.decode()  # the Reviewer's action
