"""Wrong verification codes are capped per merchant per day, across resends and filings.

Each resend resets a case's own attempt counter and a new filing starts a new
case, so without a cap per merchant a code could be guessed slowly forever.
"""

import threading
import time
from datetime import timedelta
from http import HTTPStatus

import pytest
from django.core import mail
from django.db import connection
from django.urls import reverse
from django.utils import timezone

from cases.models import Case, CaseEvent, CaseState
from cases.services import intake
from tests import factories
from tests.cases.test_intake import code_from_mail, file_request
from tests.fixtures import issued_submission_key

pytestmark = pytest.mark.django_db

CAP = 10


@pytest.fixture(autouse=True)
def _rules(settings):
    settings.THROTTLE_ENABLED = False
    settings.CASE_VERIFICATION_RESEND_INTERVAL = timedelta(0)
    settings.CASE_VERIFICATION_MAX_ATTEMPTS = 5
    settings.VERIFICATION_MAX_FAILURES_PER_MERCHANT_PER_DAY = CAP


def _merchant_with_terminals():
    merchant = factories.MerchantFactory(contact_email="contact@onfile.example.com")
    terminals = [factories.BindingFactory(merchant=merchant).terminal]
    return merchant, terminals


def _file(client, merchant, terminals) -> str:
    key = issued_submission_key(client)
    response = file_request(client, merchant, terminals, submission_key=key)
    assert response.status_code == HTTPStatus.FOUND
    return response.url.split("/")[2]


def _verify(client, token: str, code: str):
    return client.post(reverse("cases:verify", args=[token]), {"code": code})


def _resend(client, token: str) -> str:
    client.post(reverse("cases:resend", args=[token]))
    return code_from_mail(mail.outbox[-1])


def _wrong(code: str) -> str:
    return f"{(int(code) + 1) % 1_000_000:06d}"


def _fail(client, token: str, code: str, times: int) -> None:
    for _ in range(times):
        response = _verify(client, token, _wrong(code))
        assert response.status_code == HTTPStatus.OK


def _spend_the_cap(client, merchant, terminals) -> tuple[str, str]:
    """Ten wrong codes over two resends and two filings; return the last token and code."""
    token = _file(client, merchant, terminals)
    code = code_from_mail(mail.outbox[-1])
    _fail(client, token, code, 4)
    code = _resend(client, token)
    _fail(client, token, code, 4)
    client.post(reverse("cases:withdraw", args=[token]))
    assert Case.objects.get(token_hash__isnull=False, state=CaseState.WITHDRAWN)
    token = _file(client, merchant, terminals)
    code = code_from_mail(mail.outbox[-1])
    _fail(client, token, code, CAP - 8)
    return token, code


def test_wrong_codes_over_resends_and_filings_hit_the_merchant_cap(hooks_client):
    # given: ten wrong codes for one merchant, spread over resends and two filings
    merchant, terminals = _merchant_with_terminals()
    token, code = _spend_the_cap(hooks_client, merchant, terminals)
    code = _resend(hooks_client, token)  # a fresh case counter, a fresh code

    # when: even the right code is posted
    response = _verify(hooks_client, token, code)

    # then: refused for today, said clearly, and audited
    assert response.status_code == HTTPStatus.OK
    assert Case.objects.get(
        token_hash__isnull=False, state=CaseState.PENDING_VERIFICATION
    )
    page = response.content.decode()
    assert "Too many wrong codes for this merchant today" in page
    refused = CaseEvent.objects.filter(
        type=CaseEvent.Type.CODE_FAILED, payload__refused="merchant_daily_limit"
    )
    assert refused.count() == 1


def test_the_cap_does_not_block_another_merchant(hooks_client):
    # given: one merchant spent its cap
    merchant, terminals = _merchant_with_terminals()
    _spend_the_cap(hooks_client, merchant, terminals)
    other, other_terminals = _merchant_with_terminals()

    # when: another merchant files and enters its code
    token = _file(hooks_client, other, other_terminals)
    response = _verify(hooks_client, token, code_from_mail(mail.outbox[-1]))

    # then
    assert response.status_code == HTTPStatus.FOUND
    assert Case.objects.get(merchant=other).state == CaseState.SUBMITTED


def test_the_next_day_codes_are_checked_again(hooks_client, monkeypatch):
    # given: the cap was spent today
    merchant, terminals = _merchant_with_terminals()
    token, _code = _spend_the_cap(hooks_client, merchant, terminals)

    # when: tomorrow the merchant asks for a new code and enters it
    tomorrow = timezone.now() + timedelta(days=1)
    monkeypatch.setattr(intake, "_now", lambda: tomorrow)
    code = _resend(hooks_client, token)
    response = _verify(hooks_client, token, code)

    # then
    assert response.status_code == HTTPStatus.FOUND
    assert Case.objects.get(merchant=merchant, state=CaseState.SUBMITTED)


def test_the_verify_page_says_how_many_tries_are_left_today(hooks_client):
    # given: three wrong codes today
    merchant, terminals = _merchant_with_terminals()
    token = _file(hooks_client, merchant, terminals)
    _fail(hooks_client, token, code_from_mail(mail.outbox[-1]), 3)

    # when
    page = hooks_client.get(reverse("cases:verify", args=[token])).content.decode()

    # then
    assert (
        f"at most {CAP} wrong codes are accepted per merchant per day; "
        f"{CAP - 3} left today" in page
    )


def test_no_new_code_is_mailed_while_the_cap_is_spent(hooks_client):
    # given: the cap was spent today
    merchant, terminals = _merchant_with_terminals()
    token, _code = _spend_the_cap(hooks_client, merchant, terminals)
    sent = len(mail.outbox)

    # when: a new code is asked for
    response = hooks_client.post(reverse("cases:resend", args=[token]), follow=True)

    # then: none is sent (it could not be checked today), and the page says why
    assert len(mail.outbox) == sent
    assert "Too many wrong codes for this merchant today" in response.content.decode()


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_cases_of_one_merchant_cannot_both_take_the_last_try(monkeypatch):
    # given: nine wrong codes today, and two cases of the merchant awaiting a code
    merchant = factories.MerchantFactory()
    cases = [
        factories.CaseFactory(
            merchant=merchant,
            state=CaseState.PENDING_VERIFICATION,
            code_hash="0" * 64,
            code_expires_at=timezone.now() + timedelta(minutes=15),
        )
        for _ in range(2)
    ]
    for _ in range(CAP - 1):
        CaseEvent.objects.create(
            case=cases[0],
            type=CaseEvent.Type.CODE_FAILED,
            actor_kind=CaseEvent.Actor.MERCHANT,
        )
    barrier = threading.Barrier(2)
    results: list[str] = []
    count = intake._merchant_failures_today

    def slow_count(**kwargs) -> int:
        # Widen the window between counting and recording a failure.
        counted = count(**kwargs)
        time.sleep(0.3)
        return counted

    monkeypatch.setattr(intake, "_merchant_failures_today", slow_count)

    def verify(case_id: int) -> None:
        try:
            barrier.wait()
            results.append(intake.case_verify(case_id=case_id, code="123456"))
        finally:
            connection.close()

    # when: both enter a wrong code at the same moment
    threads = [threading.Thread(target=verify, args=(c.pk,)) for c in cases]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    # then: one try was left and only one code was checked
    assert results == [intake.VerificationResult.MERCHANT_LIMIT] * 2
    failed = CaseEvent.objects.filter(type=CaseEvent.Type.CODE_FAILED)
    assert failed.exclude(payload__has_key="refused").count() == CAP
    assert failed.filter(payload__refused="merchant_daily_limit").count() == 1
