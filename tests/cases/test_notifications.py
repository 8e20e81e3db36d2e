"""The notification outbox: sending once, retries, resend, templates and admin."""

import smtplib
from http import HTTPStatus

import pytest
from django.contrib.admin import helpers
from django.core import mail
from django.core.mail import EmailMultiAlternatives
from django.urls import reverse
from django.utils import timezone

from cases.admin.outbox import sample_notification
from cases.models import Notification
from cases.notifications import (
    NotificationDeliveryError,
    notification_queue,
    notification_render,
    notification_resend,
    notification_send,
)
from terminals.masking import mask_email
from tests import factories

LANGUAGES = ["en", "zh-hans"]


def queued(case=None, **kwargs) -> Notification:
    case = case or factories.CaseFactory(state="completed")
    defaults = {
        "kind": Notification.Kind.COMPLETED,
        "recipients": ["merchant@shop.example.com"],
        "dedupe_key": f"test:{case.pk}:{kwargs.get('kind', 'completed')}",
        "case": case,
        "context": {"terminals": ["SN1"], "settlement_total": "10.00"},
    }
    return notification_queue(**{**defaults, **kwargs})


class RetryCalled(Exception):
    pass


def run_send_task(
    *, notification_id: int, retries: int, monkeypatch, countdowns: list
) -> None:
    """Run notification_send_task's body as its ``retries``-th delivery."""
    from cases.tasks import notification_send_task

    def fake_retry(*, exc, countdown):
        countdowns.append(countdown)
        return RetryCalled()

    monkeypatch.setattr(notification_send_task, "retry", fake_retry)
    notification_send_task.push_request(retries=retries, is_eager=False)
    try:
        notification_send_task.run(notification_id=notification_id)
    finally:
        notification_send_task.pop_request()


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("kind", Notification.Kind.values)
def test_every_template_renders_both_parts_with_the_reference(kind, language):
    # given
    notification = sample_notification(kind=kind, language=language)

    # when
    subject, text, html = notification_render(notification)

    # then
    assert subject
    assert "\n" not in subject
    if notification.case is not None:
        assert notification.case.reference in subject
    assert text.strip()
    assert "<html" in html
    assert "{%" not in text + html


@pytest.mark.django_db
def test_a_notice_is_queued_once_and_sent_once(django_capture_on_commit_callbacks):
    # given
    case = factories.CaseFactory(state="completed")
    with django_capture_on_commit_callbacks(execute=True):
        first = queued(case)
        again = queued(case)

    # when: a duplicate delivery of the task
    sent_again = notification_send(notification_id=first.pk)

    # then
    first.refresh_from_db()
    assert again.pk == first.pk
    assert sent_again is False
    assert (first.status, first.attempts) == ("sent", 1)
    assert first.sent_at is not None
    assert case.reference in first.subject
    assert len(mail.outbox) == 1
    message = mail.outbox[0]
    assert message.to == ["merchant@shop.example.com"]
    assert message.extra_headers["X-Notification-Id"] == str(first.pk)


@pytest.mark.django_db
def test_smtp_errors_are_recorded_and_retried_with_backoff(settings, monkeypatch):
    # given
    notification = queued()

    def refuse(self, fail_silently=False):
        raise smtplib.SMTPDataError(451, b"try again later")

    monkeypatch.setattr(EmailMultiAlternatives, "send", refuse)
    settings.NOTIFICATION_RETRY_BACKOFF = 5
    settings.NOTIFICATION_RETRY_BACKOFF_MAX = 600

    countdowns: list = []

    # when
    with pytest.raises(RetryCalled):
        run_send_task(
            notification_id=notification.pk,
            retries=1,
            monkeypatch=monkeypatch,
            countdowns=countdowns,
        )

    # then: full jitter within 5 * 2**1 seconds
    assert 1 <= countdowns[0] <= 10
    notification.refresh_from_db()
    assert notification.status == Notification.Status.PENDING
    assert notification.attempts == 1
    assert "451" in notification.last_error
    assert notification.queued_at > timezone.now()  # the sweeper waits
    with pytest.raises(NotificationDeliveryError):
        notification_send(notification_id=notification.pk)
    notification.refresh_from_db()
    assert notification.attempts == 2


@pytest.mark.django_db
def test_a_notice_that_keeps_failing_is_marked_failed(settings, monkeypatch):
    # given
    notification = queued()

    def refuse(self, fail_silently=False):
        raise smtplib.SMTPServerDisconnected("gone")

    monkeypatch.setattr(EmailMultiAlternatives, "send", refuse)
    settings.NOTIFICATION_MAX_RETRIES = 2

    countdowns: list = []

    # when
    run_send_task(
        notification_id=notification.pk,
        retries=2,
        monkeypatch=monkeypatch,
        countdowns=countdowns,
    )

    # then
    notification.refresh_from_db()
    assert countdowns == []
    assert notification.status == Notification.Status.FAILED
    assert "SMTPServerDisconnected" in notification.last_error


@pytest.mark.django_db
def test_resend_requeues_a_failed_notice(django_capture_on_commit_callbacks):
    # given
    notification = queued()
    Notification.objects.filter(pk=notification.pk).update(status="failed")
    notification.refresh_from_db()

    # when
    with django_capture_on_commit_callbacks(execute=True):
        again = notification_resend(notification=notification)

    # then
    again.refresh_from_db()
    assert again.pk == notification.pk
    assert again.status == Notification.Status.SENT
    assert Notification.objects.count() == 1
    assert len(mail.outbox) == 1


@pytest.mark.django_db
def test_resend_of_a_sent_notice_makes_a_new_row(django_capture_on_commit_callbacks):
    # given
    with django_capture_on_commit_callbacks(execute=True):
        notification = queued()
    notification.refresh_from_db()

    # when
    with django_capture_on_commit_callbacks(execute=True):
        copy = notification_resend(notification=notification)

    # then
    assert copy.pk != notification.pk
    assert (copy.kind, copy.recipients) == (notification.kind, notification.recipients)
    copy.refresh_from_db()
    assert copy.status == Notification.Status.SENT
    assert len(mail.outbox) == 2


@pytest.mark.django_db
def test_a_sent_verification_code_is_not_resent(django_capture_on_commit_callbacks):
    # given
    with django_capture_on_commit_callbacks(execute=True):
        notification = queued(
            kind=Notification.Kind.VERIFICATION_CODE,
            context={"code": "123456", "ttl_minutes": 15},
        )
    notification.refresh_from_db()
    assert "code" not in notification.context

    # when
    copy = notification_resend(notification=notification)

    # then
    assert copy is None
    assert Notification.objects.count() == 1


def test_recipients_are_masked_in_the_outbox_list():
    # the one e-mail mask of terminals.masking, as on every staff page
    assert mask_email("merchant@shop.example.com") == "m***@shop.example.com"
    assert mask_email("ab@x.cn") == "a***@x.cn"


@pytest.mark.django_db
def test_outbox_admin_lists_notices_and_resends(
    admin_client, django_capture_on_commit_callbacks
):
    # given
    notification = queued()
    Notification.objects.filter(pk=notification.pk).update(
        status="failed", last_error="SMTPDataError: 451"
    )
    url = reverse("admin:cases_notification_changelist")

    # when
    listing = admin_client.get(url)
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(
            url,
            {"action": "resend", helpers.ACTION_CHECKBOX_NAME: [notification.pk]},
        )

    # then
    assert listing.status_code == HTTPStatus.OK
    assert "m***@shop.example.com" in listing.content.decode()
    assert "merchant@shop.example.com" not in listing.content.decode()
    assert response.status_code == HTTPStatus.FOUND
    notification.refresh_from_db()
    assert notification.status == Notification.Status.SENT
    detail = admin_client.get(
        reverse("admin:cases_notification_change", args=[notification.pk])
    )
    assert detail.status_code == HTTPStatus.OK


@pytest.mark.django_db
def test_staff_preview_every_template_in_both_languages(admin_client):
    # given
    index = admin_client.get(reverse("admin:cases_notification_preview"))
    assert index.status_code == HTTPStatus.OK

    for kind in Notification.Kind.values:
        for language in LANGUAGES:
            # when
            page = admin_client.get(
                reverse("admin:cases_notification_preview_kind", args=[kind, language])
            )
            html = admin_client.get(
                reverse("admin:cases_notification_preview_html", args=[kind, language])
            )

            # then
            assert page.status_code == HTTPStatus.OK, (kind, language)
            assert "data-text-part" in page.content.decode()
            assert html.status_code == HTTPStatus.OK
            assert html["Content-Type"].startswith("text/html")
    assert not Notification.objects.exists()


@pytest.mark.django_db
def test_preview_is_refused_without_permission(client, reviewer):
    # given: a staff user without any view permission on notifications
    user = factories.UserFactory(username="nobody", is_staff=True)
    client.force_login(user)

    # when
    response = client.get(
        reverse("admin:cases_notification_preview_kind", args=["completed", "en"])
    )

    # then
    assert response.status_code == HTTPStatus.FORBIDDEN


@pytest.mark.django_db
def test_preview_of_an_unknown_kind_is_not_found(admin_client):
    response = admin_client.get(
        reverse("admin:cases_notification_preview_kind", args=["nope", "en"])
    )

    assert response.status_code == HTTPStatus.NOT_FOUND


@pytest.mark.django_db
def test_step_admin_is_read_only(admin_client):
    # given
    url = reverse("admin:cases_executionstep_changelist")

    # when
    response = admin_client.get(url)

    # then
    assert response.status_code == HTTPStatus.OK
    add = admin_client.get(reverse("admin:cases_executionstep_add"))
    assert add.status_code == HTTPStatus.FORBIDDEN
