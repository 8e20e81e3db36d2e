"""SMS to the mobile number on file, through a stub gateway on loopback (real HTTP)."""

import json
import logging
import re
from datetime import timedelta
from http import HTTPStatus

import pytest
from django.core import mail
from django.urls import reverse
from django.utils import timezone

from cases.models import Case, Notification
from cases.notifications import notification_queue
from cases.services.housekeeping import outbox_sweep
from cases.sms.backends import aliyun_signature
from cases.tasks import notification_send_task
from config.celery import app as celery_app
from tests import factories
from tests.cases.test_intake import code_from_mail, form_data
from tests.httpstub import StubServer

SMS = Notification.Channel.SMS
EMAIL = Notification.Channel.EMAIL
ON_FILE = "13700001111"
TYPED = "13912345678"  # the applicant_phone of form_data
TEMPLATES = {
    "verification_code": "SMS_1001",
    "receipt": "SMS_1002",
    "info_requested": "SMS_1003",
    "rejected": "SMS_1004",
    "completed": "SMS_1005",
}


def accepted(request):
    return 200, {"Code": "OK", "Message": "OK", "BizId": "biz-1", "RequestId": "r"}


@pytest.fixture
def gateway(settings):
    """A stub SMS gateway that checks Aliyun's signature, and SMS turned on."""
    stub = StubServer(accepted)
    settings.NOTIFICATION_CHANNELS = ["email", "sms"]
    settings.SMS_BACKEND = "aliyun"
    settings.SMS_URL = f"{stub.url}/"
    settings.SMS_ACCESS_KEY_ID = "key-id"
    settings.SMS_ACCESS_KEY_SECRET = "key-secret"
    settings.SMS_SIGN_NAME = "收单服务"
    settings.SMS_TEMPLATES = dict(TEMPLATES)
    settings.SMS_TIMEOUT = 2
    yield stub
    stub.close()


def sent_sms(gateway) -> list[dict]:
    """The gateway's requests as forms, each checked against its signature."""
    forms = [r.form() for r in gateway.requests]
    for form in forms:
        signature = form.pop("Signature")
        assert signature == aliyun_signature(params=form, secret="key-secret")
    return forms


@pytest.fixture
def registry():
    merchant = factories.MerchantFactory(
        contact_email="contact@onfile.example.com", contact_phone=ON_FILE
    )
    terminals = [factories.BindingFactory(merchant=merchant).terminal]
    return merchant, terminals


@pytest.fixture
def no_eager_propagation(monkeypatch):
    """Let an eager task retry itself (Celery re-applies it in place)."""
    monkeypatch.setitem(celery_app.conf, "task_eager_propagates", False)


def queue_receipt(case, *, key="receipt") -> Notification:
    return notification_queue(
        kind=Notification.Kind.RECEIPT,
        recipients=["contact@onfile.example.com"],
        case=case,
        dedupe_key=f"case:{case.pk}:{key}",
    )


@pytest.mark.django_db
def test_filing_sends_the_code_by_sms_to_the_number_on_file(
    hooks_client, gateway, registry
):
    # given
    merchant, terminals = registry

    # when
    response = hooks_client.post(reverse("cases:new"), form_data(merchant, terminals))

    # then: one SMS, to the number on file, with the e-mailed code and the reference
    assert response.status_code == HTTPStatus.FOUND
    token = response.url.split("/")[2]
    case = Case.objects.get()
    [sms] = sent_sms(gateway)
    assert sms["PhoneNumbers"] == ON_FILE != TYPED
    assert (sms["Action"], sms["TemplateCode"]) == ("SendSms", "SMS_1001")
    assert sms["SignName"] == "收单服务"
    assert sms["OutId"] == str(Notification.objects.get(channel=SMS).pk)
    params = json.loads(sms["TemplateParam"])
    assert params["code"] == code_from_mail(mail.outbox[0])
    assert params["reference"] == case.reference
    assert token not in json.dumps(sms, ensure_ascii=False)
    row = Notification.objects.get(channel=SMS)
    assert row.status == Notification.Status.SENT
    assert "code" not in row.context  # the code does not outlive the delivery
    assert params["code"] not in row.subject


@pytest.mark.django_db
def test_the_notices_that_matter_go_by_sms_and_only_they(
    hooks_client, gateway, registry
):
    # given: a filed case
    merchant, terminals = registry
    response = hooks_client.post(reverse("cases:new"), form_data(merchant, terminals))
    code = code_from_mail(mail.outbox[0])

    # when: the code is entered (a receipt) and the case is withdrawn (no SMS)
    hooks_client.post(response.url, {"code": code})
    case = Case.objects.get()
    hooks_client.post(f"{response.url.rsplit('verify/', 1)[0]}withdraw/")

    # then
    templates = [sms["TemplateCode"] for sms in sent_sms(gateway)]
    assert templates == ["SMS_1001", "SMS_1002"]
    assert json.loads(sent_sms(gateway)[1]["TemplateParam"]) == {
        "reference": case.reference
    }


@pytest.mark.django_db
def test_a_gateway_error_is_retried_then_the_sms_goes_once(
    gateway, registry, no_eager_propagation, django_capture_on_commit_callbacks
):
    # given: the gateway fails once
    answers = iter([(500, {"Code": "isp.SYSTEM_ERROR"})])
    gateway.handler = lambda r: next(answers, None) or accepted(r)
    case = factories.CaseFactory(merchant=registry[0])

    # when
    with django_capture_on_commit_callbacks(execute=True):
        queue_receipt(case)

    # then: two tries of the same SMS; the e-mail went once; nothing else
    forms = sent_sms(gateway)
    assert [f["OutId"] for f in forms] == [forms[0]["OutId"]] * 2
    sms = Notification.objects.get(channel=SMS)
    assert (sms.status, sms.attempts) == (Notification.Status.SENT, 2)
    assert Notification.objects.filter(channel=EMAIL).count() == 1
    assert len(mail.outbox) == 1

    # when: the task is delivered again and the sweeper runs
    with django_capture_on_commit_callbacks(execute=True):
        notification_send_task.apply(kwargs={"notification_id": sms.pk})
        outbox_sweep(now=timezone.now() + timedelta(hours=1))

    # then: nothing is sent twice
    assert len(gateway.requests) == 2
    assert len(mail.outbox) == 1


@pytest.mark.django_db
def test_a_refused_sms_falls_back_to_email_without_retrying(
    settings, gateway, registry, django_capture_on_commit_callbacks
):
    # given: SMS only, and the gateway refuses the number
    settings.NOTIFICATION_CHANNELS = ["sms"]
    gateway.handler = lambda r: (
        200,
        {"Code": "isv.MOBILE_NUMBER_ILLEGAL", "Message": "invalid mobile number"},
    )
    case = factories.CaseFactory(merchant=registry[0])

    # when
    with django_capture_on_commit_callbacks(execute=True):
        queue_receipt(case)

    # then
    assert len(gateway.requests) == 1
    sms = Notification.objects.get(channel=SMS)
    assert sms.status == Notification.Status.FAILED
    assert "MOBILE_NUMBER_ILLEGAL" in sms.last_error
    email = Notification.objects.get(channel=EMAIL)
    assert email.status == Notification.Status.SENT
    assert email.dedupe_key == f"case:{case.pk}:receipt"
    assert [m.to for m in mail.outbox] == [["contact@onfile.example.com"]]
    assert "email_recipients" not in email.context


@pytest.mark.django_db
def test_an_sms_out_of_retries_falls_back_to_email_once(
    settings,
    gateway,
    registry,
    no_eager_propagation,
    django_capture_on_commit_callbacks,
):
    # given: SMS only; the gateway is down
    settings.NOTIFICATION_CHANNELS = ["sms"]
    settings.NOTIFICATION_MAX_RETRIES = 2
    gateway.handler = lambda r: (503, {})
    case = factories.CaseFactory(merchant=registry[0])

    # when
    with django_capture_on_commit_callbacks(execute=True):
        queue_receipt(case)

    # then
    assert len(gateway.requests) == 3
    assert Notification.objects.get(channel=SMS).status == Notification.Status.FAILED
    assert len(mail.outbox) == 1


@pytest.mark.django_db
def test_a_failed_sms_does_not_resend_an_email_already_sent(
    gateway, registry, django_capture_on_commit_callbacks
):
    # given: both channels; the gateway refuses
    gateway.handler = lambda r: (200, {"Code": "isv.SMS_TEMPLATE_ILLEGAL"})
    case = factories.CaseFactory(merchant=registry[0])

    # when
    with django_capture_on_commit_callbacks(execute=True):
        queue_receipt(case)

    # then
    assert Notification.objects.get(channel=SMS).status == Notification.Status.FAILED
    assert Notification.objects.filter(channel=EMAIL).count() == 1
    assert len(mail.outbox) == 1


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("channels", "sms_rows", "emails"),
    [(["email"], 0, 1), (["sms"], 1, 0), (["email", "sms"], 1, 1)],
)
def test_the_channels_setting_is_respected(
    settings,
    gateway,
    registry,
    channels,
    sms_rows,
    emails,
    django_capture_on_commit_callbacks,
):
    # given
    settings.NOTIFICATION_CHANNELS = channels
    case = factories.CaseFactory(merchant=registry[0])

    # when: a merchant notice and a staff e-mail
    with django_capture_on_commit_callbacks(execute=True):
        queue_receipt(case)
        notification_queue(
            kind=Notification.Kind.EXECUTION_FAILED,
            recipients=["ops@example.com"],
            case=case,
            context={"step": "unbind", "step_label": "unbind", "reason": "x"},
            dedupe_key=f"case:{case.pk}:failed",
        )

    # then: the staff e-mail always goes by e-mail
    assert len(gateway.requests) == sms_rows
    assert Notification.objects.filter(channel=SMS).count() == sms_rows
    assert [m.to for m in mail.outbox].count(["contact@onfile.example.com"]) == emails
    assert ["ops@example.com"] in [m.to for m in mail.outbox]


@pytest.mark.django_db
def test_without_a_number_on_file_the_notice_goes_by_email(
    settings, gateway, django_capture_on_commit_callbacks
):
    # given
    settings.NOTIFICATION_CHANNELS = ["sms"]
    case = factories.CaseFactory(merchant=factories.MerchantFactory(contact_phone=""))

    # when
    with django_capture_on_commit_callbacks(execute=True):
        queue_receipt(case)

    # then
    assert gateway.requests == []
    assert len(mail.outbox) == 1


@pytest.mark.django_db
def test_the_console_backend_logs_the_text_in_the_case_language_with_a_masked_number(
    settings, registry, caplog, django_capture_on_commit_callbacks
):
    # given
    settings.NOTIFICATION_CHANNELS = ["email", "sms"]
    settings.SMS_BACKEND = "console"
    case = factories.CaseFactory(merchant=registry[0], language="zh-hans")

    # when
    with (
        caplog.at_level(logging.INFO, logger="cases.sms"),
        django_capture_on_commit_callbacks(execute=True),
    ):
        queue_receipt(case)

    # then
    [line] = [r.getMessage() for r in caplog.records if r.name == "cases.sms.backends"]
    assert "137****1111" in line
    assert ON_FILE not in line
    assert case.reference in line
    assert re.search(r"[\u4e00-\u9fff]", line)


@pytest.mark.django_db
@pytest.mark.parametrize(("debug", "shown"), [(False, False), (True, True)])
def test_the_console_backend_logs_a_code_only_in_debug(
    settings, registry, caplog, debug, shown, django_capture_on_commit_callbacks
):
    # given
    settings.DEBUG = debug
    settings.NOTIFICATION_CHANNELS = ["sms"]
    settings.SMS_BACKEND = "console"
    case = factories.CaseFactory(merchant=registry[0])

    # when
    with (
        caplog.at_level(logging.INFO, logger="cases.sms"),
        django_capture_on_commit_callbacks(execute=True),
    ):
        notification_queue(
            kind=Notification.Kind.VERIFICATION_CODE,
            recipients=["contact@onfile.example.com"],
            case=case,
            context={"code": "424242", "ttl_minutes": 15},
            dedupe_key=f"case:{case.pk}:code:1",
        )

    # then
    [line] = [r.getMessage() for r in caplog.records if r.name == "cases.sms.backends"]
    assert ("424242" in line) is shown
    assert "15" in line


@pytest.mark.django_db
def test_a_copy_for_the_applicant_alone_brings_no_second_sms(
    gateway, registry, django_capture_on_commit_callbacks
):
    # given: the completion for the contact on file, and a copy for the applicant
    case = factories.CaseFactory(merchant=registry[0])

    # when
    with django_capture_on_commit_callbacks(execute=True):
        for key, address in [
            ("completed", "contact@onfile.example.com"),
            ("completed:applicant", "applicant@typed.example.com"),
        ]:
            notification_queue(
                kind=Notification.Kind.COMPLETED,
                recipients=[address],
                case=case,
                dedupe_key=f"case:{case.pk}:{key}",
            )

    # then
    [sms] = sent_sms(gateway)
    assert sms["TemplateCode"] == "SMS_1005"
    assert Notification.objects.get(channel=SMS).dedupe_key.endswith(":completed:sms")
