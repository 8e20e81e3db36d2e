"""The request form's submission key: a replay only for the browser that got the form.

The key makes a double-posted form lead to its first case. Whoever can replay
a key holds that case's tracking token, so a key (or a token salt) learnt from
anywhere but the form itself must open nothing.
"""

from http import HTTPStatus

import pytest
from django.core import mail
from django.db import connection
from django.test import Client
from django.urls import reverse

from cases.models import Case, CaseEvent, CaseTerminal, Document, Notification
from terminals.models import Binding, Merchant, Terminal
from tests import factories
from tests.cases.test_intake import file_request, form_data
from tests.fixtures import issued_submission_key

pytestmark = pytest.mark.django_db


@pytest.fixture
def registry():
    merchant = factories.MerchantFactory(contact_email="contact@onfile.example.com")
    terminals = [factories.BindingFactory(merchant=merchant).terminal for _ in range(2)]
    return merchant, terminals


def _row_values(queryset) -> set[str]:
    """Every column of every row, as the text a database copy would show."""
    values: set[str] = set()
    for row in queryset.values():
        for value in row.values():
            if value not in (None, ""):
                values.add(str(value))
                if isinstance(value, (list, dict)):
                    values.update(str(v) for v in _flatten(value))
    return values


def _flatten(value):
    if isinstance(value, dict):
        for v in value.values():
            yield from _flatten(v)
    elif isinstance(value, list):
        for v in value:
            yield from _flatten(v)
    else:
        yield value


def _file_one_case(hooks_client, merchant, terminals) -> tuple[Case, str, str]:
    key = issued_submission_key(hooks_client)
    response = file_request(hooks_client, merchant, terminals, submission_key=key)
    assert response.status_code == HTTPStatus.FOUND
    return Case.objects.get(), response.url, key


def test_a_second_browser_posting_a_case_salt_or_key_gets_no_tracking_link(
    hooks_client,
    registry,
):
    # given: a case filed from the merchant's browser
    merchant, terminals = registry
    case, verify_url, key = _file_one_case(hooks_client, merchant, terminals)
    before = (case.updated_at, case.events.count(), Notification.objects.count())
    mail.outbox.clear()
    stranger = Client()
    issued_submission_key(stranger)  # the stranger's own form and cookie

    for posted in (case.token_salt, key):
        # when: another browser posts the salt or the key, with or without the form
        answers = [
            stranger.post(reverse("cases:new"), {"submission_key": posted}),
            stranger.post(
                reverse("cases:new"),
                form_data(merchant, terminals, submission_key=posted),
            ),
        ]

        # then: no tracking link, and the case is untouched
        for response in answers:
            assert response.status_code == HTTPStatus.OK, posted
            assert verify_url not in response.content.decode()
            assert case.tracking_token not in response.content.decode()
    case.refresh_from_db()
    assert (case.updated_at, case.events.count(), Notification.objects.count()) == (
        before
    )
    assert Case.objects.count() == 1
    assert mail.outbox == []


def test_a_database_copy_alone_opens_no_case(
    hooks_client,
    registry,
    settings,
):
    # given: a filed case and every value its rows hold
    settings.THROTTLE_ENABLED = False
    merchant, terminals = registry
    case, _verify_url, _key = _file_one_case(hooks_client, merchant, terminals)
    values = set()
    for queryset in (
        Case.objects.filter(pk=case.pk),
        CaseTerminal.objects.filter(case=case),
        Document.objects.filter(case=case),
        CaseEvent.objects.filter(case=case),
        Notification.objects.filter(case=case),
        Merchant.objects.filter(pk=case.merchant_id),
        Terminal.objects.filter(case_links__case=case),
        Binding.objects.filter(merchant=case.merchant),
    ):
        values |= _row_values(queryset)
    with connection.cursor() as cursor:
        cursor.execute("SELECT session_key, session_data FROM django_session")
        values |= {str(v) for row in cursor.fetchall() for v in row}
    assert case.token_salt in values
    reader = Client()  # a browser of someone holding the copy
    issued_submission_key(reader)

    for value in sorted(values):
        # when: the value is posted as a submission key, or used as a token
        posted = reader.post(reverse("cases:new"), {"submission_key": value})
        tracked = reader.get(f"/requests/{value}/") if "/" not in value else None

        # then: neither leads to the case
        assert posted.status_code == HTTPStatus.OK, value
        assert case.tracking_token not in posted.content.decode(), value
        if tracked is not None:
            assert tracked.status_code == HTTPStatus.NOT_FOUND, value


def test_the_same_form_posted_twice_by_its_browser_makes_one_case(
    hooks_client,
    registry,
):
    # given
    merchant, terminals = registry
    key = issued_submission_key(hooks_client)

    # when
    first = file_request(hooks_client, merchant, terminals, submission_key=key)
    second = file_request(hooks_client, merchant, terminals, submission_key=key)

    # then
    assert first.status_code == second.status_code == HTTPStatus.FOUND
    assert first.url == second.url
    assert Case.objects.count() == 1
    assert len(mail.outbox) == 1


def test_a_key_of_the_wrong_format_is_not_replayed(hooks_client, registry):
    # given: a case filed with an issued key
    merchant, terminals = registry
    _case, _verify_url, key = _file_one_case(hooks_client, merchant, terminals)

    for posted in (key.upper(), f" {key}", f"{key}\n", key + "0"):
        # when: the same browser posts a variant of its key
        response = hooks_client.post(reverse("cases:new"), {"submission_key": posted})

        # then: no replay
        assert response.status_code == HTTPStatus.OK, repr(posted)
