"""Notices sent in batches: one SMTP connection per batch, each notice once.

A real SMTP server (aiosmtpd) on a loopback port counts the connections
(one EHLO each) and the messages it takes.
"""

import socket
import threading

import pytest
from django.utils import timezone

from cases.models import Notification
from cases.notifications import notification_queue_many, notifications_send_batch
from tests import factories


class CountingServer:
    """An aiosmtpd handler counting connections and messages; refuses on demand."""

    def __init__(self):
        self.connections = 0
        self.messages: list[list[str]] = []
        self.refuse: set[str] = set()
        self._lock = threading.Lock()

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        with self._lock:
            self.connections += 1
        session.host_name = hostname
        return responses

    async def handle_DATA(self, server, session, envelope):
        if set(envelope.rcpt_tos) & self.refuse:
            return "451 Try again later"
        with self._lock:
            self.messages.append(list(envelope.rcpt_tos))
        return "250 Message accepted for delivery"


@pytest.fixture
def smtp(settings):
    from aiosmtpd.controller import Controller

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    handler = CountingServer()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST = "127.0.0.1"
    settings.EMAIL_PORT = port
    settings.EMAIL_USE_TLS = False
    settings.EMAIL_USE_SSL = False
    settings.EMAIL_HOST_USER = ""
    settings.EMAIL_HOST_PASSWORD = ""
    yield handler
    controller.stop()


def notices(count: int) -> list[Notification]:
    case = factories.CaseFactory(state="completed")
    return [
        Notification(
            case=case,
            kind=Notification.Kind.COMPLETED,
            recipients=[f"n{i}@shop.example.com"],
            dedupe_key=f"batch-test:{case.pk}:{i}",
            context={"terminals": ["SN1"], "settlement_total": "10.00"},
            language="en",
            queued_at=timezone.now(),
        )
        for i in range(count)
    ]


@pytest.mark.django_db
def test_a_batch_of_notices_goes_over_one_smtp_connection(
    smtp, django_capture_on_commit_callbacks
):
    # given: five notices queued together (as the completion of a case does)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        rows = notification_queue_many(notifications=notices(5))

    # when: the one batch task they queued runs
    assert len(callbacks) == 1
    callbacks[0]()

    # then
    assert smtp.connections == 1
    assert sorted(r for m in smtp.messages for r in m) == sorted(
        f"n{i}@shop.example.com" for i in range(5)
    )
    for row in rows:
        row.refresh_from_db()
        assert (row.status, row.attempts) == (Notification.Status.SENT, 1)
        assert row.sent_at is not None


@pytest.mark.django_db
def test_a_batch_delivered_twice_sends_each_notice_once(
    smtp, django_capture_on_commit_callbacks
):
    # given: a batch already sent
    with django_capture_on_commit_callbacks(execute=True):
        rows = notification_queue_many(notifications=notices(3))
    with_ids = [n.pk for n in rows]
    assert len(smtp.messages) == 3
    smtp.messages.clear()

    # when: the broker delivers the same batch again
    done = notifications_send_batch(notification_ids=with_ids)

    # then: nothing more goes out
    assert done == {"sent": [], "failed": []}
    assert smtp.messages == []
    assert set(
        Notification.objects.filter(pk__in=with_ids).values_list("attempts", flat=True)
    ) == {1}


@pytest.mark.django_db
def test_a_refused_notice_is_recorded_and_left_for_its_retry_the_others_go(
    smtp, django_capture_on_commit_callbacks
):
    # given: the server refuses one recipient for now
    smtp.refuse = {"n1@shop.example.com"}
    with django_capture_on_commit_callbacks(execute=False):
        rows = notification_queue_many(notifications=notices(3))
    ids = [r.pk for r in rows]

    # when
    done = notifications_send_batch(notification_ids=ids)

    # then: the other two sent once; the refused one pending, its attempt noted
    assert done == {"sent": [ids[0], ids[2]], "failed": [ids[1]]}
    refused = Notification.objects.get(pk=ids[1])
    assert refused.status == Notification.Status.PENDING
    assert refused.attempts == 1
    assert "451" in refused.last_error
    assert sorted(r for m in smtp.messages for r in m) == [
        "n0@shop.example.com",
        "n2@shop.example.com",
    ]


@pytest.mark.django_db
def test_a_batch_reads_a_shared_attachment_once_and_writes_its_rows_at_once(smtp):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    # given: three notices of a case attaching the same export
    rows = notices(3)
    export = factories.DocumentFactory(
        case=rows[0].case,
        kind="data_export",
        original_name="export.csv",
        content_type="text/csv",
        file=factories.factory.django.FileField(
            filename="export.csv", data=b"serial_number\nSN1\n"
        ),
    )
    for row in rows:
        row.context["attachments"] = [export.pk]
    Notification.objects.bulk_create(rows)
    ids = list(Notification.objects.order_by("pk").values_list("pk", flat=True))

    # when
    with CaptureQueriesContext(connection) as queries:
        done = notifications_send_batch(notification_ids=ids)

    # then: all three sent, each with the file, over one connection
    assert done == {"sent": ids, "failed": []}
    assert smtp.connections == 1
    assert len(smtp.messages) == 3
    sql = [q["sql"] for q in queries]
    assert sum('FROM "cases_document"' in q for q in sql) == 1
    assert sum(q.startswith('UPDATE "cases_notification"') for q in sql) == 1
    for row in Notification.objects.filter(pk__in=ids):
        assert (row.status, row.attempts) == (Notification.Status.SENT, 1)
