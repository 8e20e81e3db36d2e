"""A chain's progress on the staff case page and the tracking page, at a fixed query count."""

from http import HTTPStatus

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import translation

from cases.models import CaseState, CaseTerminal
from tests import factories


def failed_chain(*, terminals: int, refused: int):
    """A failed case of ``terminals``: the first ``refused`` refused, half the rest done."""
    merchant = factories.MerchantFactory()
    bound = [
        factories.BindingFactory(merchant=merchant).terminal for _ in range(terminals)
    ]
    case = factories.CaseFactory(
        merchant=merchant,
        terminals=bound,
        state=CaseState.FAILED,
        failure_step="unbind",
        failure_reason="refused",
    )
    links = list(case.case_terminals.order_by("terminal__serial_number"))
    for link in links[:refused]:
        link.execution_status = CaseTerminal.ExecutionStatus.FAILED
        link.execution_error = "frozen by the core"
    for link in links[refused : refused + (terminals - refused) // 2]:
        link.execution_status = CaseTerminal.ExecutionStatus.DONE
    CaseTerminal.objects.bulk_update(links, ["execution_status", "execution_error"])
    return case, links


def queries_of(client, url) -> tuple[int, str]:
    client.get(url)  # warm the per-process caches (content types, session)
    with CaptureQueriesContext(connection) as queries:
        response = client.get(url)
    assert response.status_code == HTTPStatus.OK
    return len(queries), response.content.decode()


@pytest.mark.django_db
def test_the_staff_case_page_shows_progress_and_the_refused_terminals(
    client, operations, django_assert_num_queries
):
    # given
    small, _ = failed_chain(terminals=3, refused=1)
    large, links = failed_chain(terminals=300, refused=3)
    client.force_login(operations)
    count, _ = queries_of(client, reverse("admin:cases_case_change", args=[small.pk]))

    # when
    with django_assert_num_queries(count):
        response = client.get(reverse("admin:cases_case_change", args=[large.pk]))

    # then
    html = response.content.decode()
    assert 'data-progress-done="148"' in html
    assert 'data-progress-failed="3"' in html
    assert 'data-progress-total="300"' in html
    assert '<progress class="case-progress__bar" max="300" value="148">' in html
    for link in links[:3]:
        assert f'data-terminal-failed="{link.terminal.serial_number}"' in html
    assert html.count("data-terminal-failed=") == 3


@pytest.mark.django_db
def test_the_tracking_page_shows_counts_and_the_terminals_done(
    client, django_assert_num_queries
):
    # given
    small, _ = failed_chain(terminals=3, refused=1)
    large, links = failed_chain(terminals=300, refused=3)
    count, _ = queries_of(client, small.get_tracking_path())

    # when
    with django_assert_num_queries(count):
        response = client.get(large.get_tracking_path())

    # then
    html = response.content.decode()
    assert 'data-progress-done="148" data-progress-total="300"' in html
    done = [link.terminal.serial_number for link in links[3:151]]
    assert f"data-terminals-done>{' '.join(done)}</p>" in html


@pytest.mark.django_db
def test_the_tracking_page_shows_progress_in_chinese(client):
    # given
    case, _ = failed_chain(terminals=3, refused=1)

    # when (the override restores the thread's language the middleware sets)
    with translation.override("en"):
        response = client.get(case.get_tracking_path(), HTTP_ACCEPT_LANGUAGE="zh-hans")

    # then
    assert "解绑进度" in response.content.decode()
