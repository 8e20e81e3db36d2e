"""The merchant page: sign in with a one-time code to the contact on file, see everything."""

import json
import re
from datetime import timedelta
from decimal import Decimal
from http import HTTPStatus

import pytest
from django.core import mail
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone, translation

from cases.models import (
    CaseState,
    DeviceReturn,
    DeviceReturnState,
    MerchantSignIn,
    Notification,
)
from cases.portal import SESSION_COOKIE
from cases.services import merchant_portal
from tests import factories
from tests.cases.test_sms import gateway, sent_sms  # noqa: F401 (fixture)

LOGIN = "/merchant/login/"
CODE = "/merchant/login/code/"
HOME = "/merchant/"


def code_in(message) -> str:
    return re.search(r"(?<![\d-])(\d{6})(?!\d)", message.body).group(1)


@pytest.fixture(autouse=True)
def _english_after(settings):
    """A request in Chinese leaves Chinese active in this thread; reset it after."""
    yield
    translation.activate(settings.LANGUAGE_CODE)


@pytest.fixture
def shop(db):
    merchant = factories.MerchantFactory(
        name="王记小吃店",
        contact_email="owner@onfile.example.com",
        contact_phone="13700001111",
    )
    binding = factories.BindingFactory(merchant=merchant)
    return merchant, binding.terminal


def ask_code(client, merchant_id: str, channel: str = "email", **extra):
    return client.post(LOGIN, {"merchant_id": merchant_id, "channel": channel}, **extra)


def sign_in(client, merchant) -> None:
    ask_code(client, merchant.merchant_id)
    code = code_in(mail.outbox[-1])
    response = client.post(CODE, {"code": code})
    assert response.status_code == HTTPStatus.FOUND
    assert response["Location"] == HOME


def test_merchant_signs_in_with_the_code_from_the_email_on_file(hooks_client, shop):
    """The code goes to the e-mail on file; the page then shows terminals and cases."""
    client = hooks_client
    # given
    merchant, terminal = shop
    case = factories.CaseFactory(
        merchant=merchant, state=CaseState.SUBMITTED, terminals=[terminal]
    )

    # when
    response = ask_code(client, merchant.merchant_id)

    # then: the code went to the address on file, never typed anywhere
    assert response.status_code == HTTPStatus.FOUND
    assert response["Location"] == CODE
    assert mail.outbox[-1].to == ["owner@onfile.example.com"]
    code = code_in(mail.outbox[-1])
    sign_in_row = MerchantSignIn.objects.get()
    assert sign_in_row.code_hash
    assert code not in sign_in_row.code_hash
    assert "code" not in Notification.objects.get().context  # dropped once sent

    # when
    response = client.post(CODE, {"code": code}, follow=True)

    # then
    assert response.status_code == HTTPStatus.OK
    page = response.content.decode()
    assert merchant.name in page
    assert f'data-serial="{terminal.serial_number}"' in page
    assert f'data-case="{case.reference}"' in page
    assert reverse("cases:detail", args=[case.tracking_token]) in page
    assert "13700001111" not in page
    assert "owner@onfile" not in page
    sign_in_row.refresh_from_db()
    assert sign_in_row.status == MerchantSignIn.Status.SIGNED_IN
    assert sign_in_row.client_ip == "127.0.0.1"
    # The session cookie is the merchant's own, scoped away from /admin/.
    cookie = response.client.cookies[SESSION_COOKIE]
    assert cookie["path"] == "/merchant/"
    assert cookie["httponly"]


def test_sign_in_code_by_sms_goes_to_the_mobile_on_file(
    hooks_client,
    shop,
    gateway,  # noqa: F811
    settings,
):
    client = hooks_client
    # given
    settings.SMS_TEMPLATES = {**settings.SMS_TEMPLATES, "sign_in_code": "SMS_2001"}
    merchant, _terminal = shop

    # when
    ask_code(client, merchant.merchant_id, channel="sms")

    # then
    (form,) = sent_sms(gateway)
    assert form["PhoneNumbers"] == "13700001111"
    assert form["TemplateCode"] == "SMS_2001"
    assert re.fullmatch(r"\d{6}", json.loads(form["TemplateParam"])["code"])
    assert mail.outbox == []
    notice = Notification.objects.get()
    assert notice.channel == Notification.Channel.SMS
    assert notice.kind == Notification.Kind.SIGN_IN_CODE


def test_wrong_code_is_refused_and_locks_after_the_limit(hooks_client, shop, settings):
    client = hooks_client
    # given
    settings.MERCHANT_SIGN_IN_MAX_ATTEMPTS = 3
    merchant, _terminal = shop
    ask_code(client, merchant.merchant_id)
    good = code_in(mail.outbox[-1])
    wrong = "000000" if good != "000000" else "111111"

    # when
    first = client.post(CODE, {"code": wrong})

    # then
    assert first.status_code == HTTPStatus.OK
    assert "This code is not right" in first.content.decode()
    assert client.get(HOME)["Location"] == LOGIN

    # when: the limit is reached, even the right code no longer works
    client.post(CODE, {"code": wrong})
    client.post(CODE, {"code": wrong})
    last = client.post(CODE, {"code": good})

    # then
    assert "Too many wrong codes" in last.content.decode()
    row = MerchantSignIn.objects.get()
    assert row.status == MerchantSignIn.Status.LOCKED
    assert row.code_attempts == 3
    assert client.get(HOME).status_code == HTTPStatus.FOUND


def test_expired_code_is_refused(hooks_client, shop, monkeypatch):
    client = hooks_client
    # given
    merchant, _terminal = shop
    ask_code(client, merchant.merchant_id)
    code = code_in(mail.outbox[-1])
    later = timezone.now() + timedelta(minutes=11)
    monkeypatch.setattr(merchant_portal, "_now", lambda: later)

    # when
    response = client.post(CODE, {"code": code})

    # then
    assert "This code has expired" in response.content.decode()


def test_unknown_merchant_gets_the_same_answer_and_no_code(
    hooks_client, shop, django_capture_on_commit_callbacks
):
    """Nobody learns from the answer whether a merchant number exists."""
    client = hooks_client
    # given
    merchant, _terminal = shop

    # when
    known = ask_code(client, merchant.merchant_id)
    known_page = client.get(CODE).content.decode()
    other = type(client)()
    with django_capture_on_commit_callbacks(execute=True):
        unknown = ask_code(other, "999999999999999")
    unknown_page = other.get(CODE).content.decode()

    # then
    assert known.status_code == unknown.status_code == HTTPStatus.FOUND
    assert known["Location"] == unknown["Location"] == CODE
    strip = lambda page: re.sub(r'name="csrfmiddlewaretoken" value="[^"]+"', "", page)  # noqa: E731
    assert strip(known_page) == strip(unknown_page)
    assert len(mail.outbox) == 1
    refused = MerchantSignIn.objects.get(merchant_number="999999999999999")
    assert refused.merchant is None
    assert refused.refused_because == merchant_portal.REFUSED_UNKNOWN
    # and any code typed for it answers like a wrong code
    assert (
        "This code is not right"
        in other.post(CODE, {"code": "123456"}).content.decode()
    )


def test_code_is_not_resent_too_soon(hooks_client, shop):
    client = hooks_client
    # given
    merchant, _terminal = shop
    ask_code(client, merchant.merchant_id)

    # when
    again = ask_code(client, merchant.merchant_id)

    # then: same answer, no second code
    assert again["Location"] == CODE
    assert len(mail.outbox) == 1
    assert (
        MerchantSignIn.objects.filter(
            refused_because=merchant_portal.REFUSED_TOO_SOON
        ).count()
        == 1
    )


def test_sign_in_requests_are_throttled(hooks_client, shop, settings):
    client = hooks_client
    # given
    settings.THROTTLE_RATES = {**settings.THROTTLE_RATES, "merchant_sign_in": "3/600"}
    merchant, _terminal = shop

    # when
    answers = [
        ask_code(client, merchant.merchant_id, REMOTE_ADDR=f"10.0.0.{i}").status_code
        for i in range(5)
    ]

    # then: the merchant number is a key, so changing address does not help
    assert answers[:3] == [HTTPStatus.FOUND] * 3
    assert answers[3:] == [HTTPStatus.TOO_MANY_REQUESTS] * 2


def test_daily_failure_cap_per_merchant_holds_across_codes(
    hooks_client, shop, settings
):
    client = hooks_client
    # given
    settings.VERIFICATION_MAX_FAILURES_PER_MERCHANT_PER_DAY = 2
    settings.CASE_VERIFICATION_RESEND_INTERVAL = timedelta(0)
    merchant, _terminal = shop
    ask_code(client, merchant.merchant_id)
    client.post(CODE, {"code": "000001"})
    client.post(CODE, {"code": "000002"})

    # when: a new code is asked for
    ask_code(client, merchant.merchant_id)

    # then: none is sent today
    assert len(mail.outbox) == 1
    assert MerchantSignIn.objects.filter(
        refused_because=merchant_portal.REFUSED_DAILY_LIMIT
    ).exists()


def test_merchant_session_is_separate_from_the_staff_admin(
    hooks_client, shop, reviewer
):
    client = hooks_client
    # given
    merchant, _terminal = shop
    sign_in(client, merchant)

    # when / then: the merchant session opens no admin page
    response = client.get("/admin/")
    assert response.status_code == HTTPStatus.FOUND
    assert "/admin/login/" in response["Location"]

    # when: a staff member logs in and out in the same browser
    client.force_login(reviewer)
    assert client.get("/admin/").status_code == HTTPStatus.OK
    client.post("/admin/logout/")

    # then: the merchant is still signed in (different cookie, server-side row)
    assert client.get(HOME).status_code == HTTPStatus.OK


def test_sign_out_ends_the_session_on_the_server(hooks_client, shop):
    client = hooks_client
    # given
    merchant, _terminal = shop
    sign_in(client, merchant)
    stolen = client.cookies[SESSION_COOKIE].value

    # when
    response = client.post("/merchant/logout/")

    # then: even a copy of the cookie no longer opens the page
    assert response["Location"] == LOGIN
    client.cookies[SESSION_COOKIE] = stolen
    client.cookies[SESSION_COOKIE]["path"] = "/merchant/"
    assert client.get(HOME)["Location"] == LOGIN
    row = MerchantSignIn.objects.get()
    assert row.status == MerchantSignIn.Status.SIGNED_OUT
    assert row.session_hash == ""


def test_idle_session_lapses(hooks_client, shop, monkeypatch, settings):
    client = hooks_client
    # given
    settings.MERCHANT_SESSION_IDLE = timedelta(minutes=15)
    merchant, _terminal = shop
    sign_in(client, merchant)
    later = timezone.now() + timedelta(minutes=16)
    monkeypatch.setattr(merchant_portal, "_now", lambda: later)

    # when
    response = client.get(HOME)

    # then
    assert response["Location"] == LOGIN


def test_a_new_sign_in_rotates_the_session(hooks_client, shop, settings):
    client = hooks_client
    # given
    settings.CASE_VERIFICATION_RESEND_INTERVAL = timedelta(0)
    merchant, _terminal = shop
    sign_in(client, merchant)
    first = client.cookies[SESSION_COOKIE].value

    # when
    sign_in(client, merchant)

    # then
    assert client.cookies[SESSION_COOKIE].value != first


def test_tracking_link_works_without_signing_in(hooks_client, shop):
    client = hooks_client
    # given
    merchant, terminal = shop
    case = factories.CaseFactory(
        merchant=merchant, state=CaseState.SUBMITTED, terminals=[terminal]
    )

    # when
    response = client.get(reverse("cases:detail", args=[case.tracking_token]))

    # then
    assert response.status_code == HTTPStatus.OK


def test_merchant_page_in_chinese(hooks_client, shop):
    client = hooks_client
    # given
    merchant, _terminal = shop

    # when
    page = client.get(LOGIN, HTTP_ACCEPT_LANGUAGE="zh-hans").content.decode()
    sign_in(client, merchant)
    home = client.get(HOME, HTTP_ACCEPT_LANGUAGE="zh-hans").content.decode()

    # then
    assert "商户登录" in page
    assert "退出登录" in home


def test_sign_ins_are_in_the_audit_admin_read_only(hooks_client, shop, auditor):
    # given
    merchant, _terminal = shop
    ask_code(hooks_client, merchant.merchant_id)
    ask_code(type(hooks_client)(), "999999999999999")
    hooks_client.force_login(auditor)

    # when
    listing = hooks_client.get("/admin/cases/merchantsignin/")
    row = MerchantSignIn.objects.get(merchant=merchant)
    detail = hooks_client.get(f"/admin/cases/merchantsignin/{row.pk}/change/")

    # then
    assert listing.status_code == HTTPStatus.OK
    html = listing.content.decode()
    assert merchant.merchant_id in html
    assert "999999999999999" in html
    assert row.code_hash not in detail.content.decode()
    assert b'name="_save"' not in detail.content


def test_merchant_page_shows_each_cases_final_statement(hooks_client, shop):
    # given: a case with stated fees (a line of the final statement)
    merchant, terminal = shop
    case = factories.CaseFactory(
        merchant=merchant, state=CaseState.IN_REVIEW, terminals=[terminal]
    )
    type(case).objects.filter(pk=case.pk).update(fees_amount=Decimal("120.00"))
    sign_in(hooks_client, merchant)

    # when
    page = hooks_client.get(HOME).content.decode()

    # then
    assert 'id="statement"' in page
    assert 'data-line="fees"' in page
    assert "120.00" in page
    # and an unverified request (not the merchant's yet) is not listed
    pending = factories.CaseFactory(
        merchant=merchant, state=CaseState.PENDING_VERIFICATION
    )
    assert (
        f'data-case="{pending.reference}"'
        not in hooks_client.get(HOME).content.decode()
    )


def test_active_session_still_ends_after_its_maximum_age(
    hooks_client, shop, monkeypatch, settings
):
    # given: a merchant who keeps using the page every ten minutes
    settings.MERCHANT_SESSION_MAX_AGE = timedelta(hours=8)
    merchant, _terminal = shop
    sign_in(hooks_client, merchant)
    start = timezone.now()
    for minutes in range(10, 8 * 60, 10):
        moment = start + timedelta(minutes=minutes)
        monkeypatch.setattr(merchant_portal, "_now", lambda moment=moment: moment)
        assert hooks_client.get(HOME).status_code == HTTPStatus.OK

    # when: eight hours have passed
    later = start + timedelta(hours=8, minutes=5)
    monkeypatch.setattr(merchant_portal, "_now", lambda: later)

    # then
    assert hooks_client.get(HOME)["Location"] == LOGIN


def test_home_page_links_to_the_merchant_page(client):
    # when
    page = client.get("/").content.decode()

    # then
    assert 'href="/merchant/login/"' in page


def test_merchant_page_lists_the_devices_to_send_back(hooks_client, shop):
    """Each case shows its devices' way back: what is due, overdue, on its way."""
    # given: a completed case that unbound three devices
    merchant, terminal = shop
    late, shipped = factories.TerminalFactory(), factories.TerminalFactory()
    case = factories.CaseFactory(
        merchant=merchant,
        state=CaseState.COMPLETED,
        terminals=[terminal, late, shipped],
    )
    now = timezone.now()
    DeviceReturn.objects.create(
        case=case, terminal=terminal, due_at=now + timedelta(days=10)
    )
    DeviceReturn.objects.create(
        case=case, terminal=late, due_at=now - timedelta(days=2)
    )
    DeviceReturn.objects.create(
        case=case,
        terminal=shipped,
        due_at=now + timedelta(days=10),
        state=DeviceReturnState.SHIPPED,
        courier="顺丰",
        tracking_number="SF1234567890",
    )
    sign_in(hooks_client, merchant)

    # when
    page = hooks_client.get(HOME).content.decode()

    # then
    card = page[page.index(f'data-case="{case.reference}"') :]
    assert "data-device-returns" in card
    for t, state in (
        (terminal, "awaiting_return"),
        (late, "awaiting_return"),
        (shipped, "shipped"),
    ):
        assert f'data-return="{t.serial_number}" data-return-state="{state}"' in card
    assert card.count("text-bg-danger") == 1  # only the overdue one
    assert "SF1234567890" in card
    # the two still due link to where the tracking number is entered
    assert card.count("data-ship-link") == 2
    assert f"/requests/{case.tracking_token}/#device-returns" in card or (
        "#device-returns" in card
    )


def test_merchant_page_queries_do_not_grow_with_devices(hooks_client, shop):
    merchant, _terminal = shop

    case = factories.CaseFactory(merchant=merchant, state=CaseState.COMPLETED)

    def devices(n: int) -> None:
        for _ in range(n):
            DeviceReturn.objects.create(
                case=case,
                terminal=factories.TerminalFactory(),
                due_at=timezone.now() + timedelta(days=5),
            )

    def queries_of_the_page() -> int:
        with CaptureQueriesContext(connection) as queries:
            assert hooks_client.get(HOME).status_code == HTTPStatus.OK
        return len(queries)

    devices(1)
    sign_in(hooks_client, merchant)
    few = queries_of_the_page()

    devices(12)

    assert queries_of_the_page() == few
