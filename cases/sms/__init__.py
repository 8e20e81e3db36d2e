"""SMS: the merchant's notices that matter, also sent to the mobile number on file.

An SMS is a ``Notification`` row with ``channel = "sms"``, written beside the
e-mail of the same notice (dedupe key ``<e-mail key>:sms``) in the same
transaction and sent after commit by the same task, at most once.
``NOTIFICATION_CHANNELS`` decides which channels the merchant's notices use;
staff and department e-mails are not concerned.

The text is short, in the case's language, and carries the case reference
(and the code, for the verification code) but never the tracking link or
personal data. Gateways that send only registered templates get the template
code of ``SMS_TEMPLATES`` and the same values as JSON parameters.

A transient gateway error (``SmsError``: timeout, 5xx, throttling) is retried
like an SMTP error; a permanent one (``SmsRefused``) or running out of retries
marks the SMS failed and falls back to e-mail, unless that notice's e-mail
exists already.
"""

import logging
from dataclasses import dataclass, field

from django.conf import settings
from django.utils import translation
from django.utils.module_loading import import_string
from django.utils.translation import gettext

from cases.models import Notification

logger = logging.getLogger(__name__)

Kind = Notification.Kind
SMS = Notification.Channel.SMS
EMAIL = Notification.Channel.EMAIL

# The notices a merchant also gets by SMS.
SMS_KINDS = frozenset(
    {
        Kind.VERIFICATION_CODE,
        Kind.RECEIPT,
        Kind.INFO_REQUESTED,
        Kind.REJECTED,
        Kind.COMPLETED,
        Kind.ABANDONED,
        Kind.DEVICE_RETURN_REMINDER,
        Kind.MONEY_MOVED,
    }
)
# Where an SMS row keeps the e-mail recipients of its fallback.
FALLBACK_KEY = "email_recipients"

BACKENDS = {
    "console": "cases.sms.backends.ConsoleBackend",
    "aliyun": "cases.sms.backends.AliyunBackend",
}


class SmsError(Exception):
    """The gateway did not take the SMS this time; worth retrying."""


class SmsRefused(SmsError):
    """The gateway refused the SMS for good (bad number, template, signature...)."""


def sms_text(*, kind: str, params: dict, language: str) -> str:
    """The SMS text of a notice, in ``language``."""
    with translation.override(language):
        texts = {
            Kind.VERIFICATION_CODE: gettext(
                "[%(reference)s] Your verification code is %(code)s, valid for "
                "%(minutes)s minutes. Never share it."
            ),
            Kind.RECEIPT: gettext(
                "[%(reference)s] We received your unbinding request; it is in review."
            ),
            Kind.INFO_REQUESTED: gettext(
                "[%(reference)s] Your unbinding request needs more information: "
                "please see your e-mail or the tracking page."
            ),
            Kind.REJECTED: gettext(
                "[%(reference)s] Your unbinding request was rejected; the reason is "
                "in your e-mail."
            ),
            Kind.COMPLETED: gettext(
                "[%(reference)s] Your unbinding request is complete: the terminals "
                "are unbound."
            ),
            Kind.ABANDONED: gettext(
                "[%(reference)s] Your unbinding request was stopped after a "
                "failure; the details are in your e-mail."
            ),
            Kind.DEVICE_RETURN_REMINDER: gettext(
                "[%(reference)s] Please send back the unbound POS devices: the "
                "address and the form for the tracking number are on your "
                "request's page."
            ),
            Kind.SIGN_IN_CODE: gettext(
                "Your merchant page sign-in code is %(code)s, valid for "
                "%(minutes)s minutes. Never share it."
            ),
            Kind.MONEY_MOVED: gettext(
                "[%(reference)s] Money for your unbinding was paid or collected: "
                "CNY %(amount)s; details in your e-mail."
            ),
        }
        return texts[kind] % params


@dataclass
class SmsMessage:
    """One SMS ready for the backend; sends like an e-mail message."""

    notification_id: int
    kind: str
    phone: str
    template: str
    params: dict = field(default_factory=dict)
    text: str = ""

    @property
    def subject(self) -> str:
        """What the outbox row keeps: never the text (it may hold the code)."""
        return f"SMS {self.kind} [{self.params.get('reference', '')}]"

    def send(self, fail_silently: bool = False) -> None:
        sms_backend().send(self)


def sms_backend():
    name = getattr(settings, "SMS_BACKEND", "console") or "console"
    return import_string(BACKENDS.get(name, name))()


def sms_message(notification: Notification) -> SmsMessage:
    """Build the SMS of an outbox row (its template parameters and its text)."""
    context = notification.context
    params = {"reference": notification.case.reference if notification.case else ""}
    if notification.kind in (Kind.VERIFICATION_CODE, Kind.SIGN_IN_CODE):
        params.update(code=context.get("code", ""), minutes=context.get("ttl_minutes"))
    if notification.kind == Kind.MONEY_MOVED:
        params["amount"] = context.get("amount", "")
    return SmsMessage(
        notification_id=notification.pk,
        kind=notification.kind,
        phone=notification.recipients[0],
        template=settings.SMS_TEMPLATES.get(notification.kind, ""),
        params=params,
        text=sms_text(
            kind=notification.kind, params=params, language=notification.language
        ),
    )


def notices_by_channel(notice: Notification) -> list[Notification]:
    """The unsaved rows of a merchant notice, one per channel of NOTIFICATION_CHANNELS.

    The SMS goes to the merchant's mobile number on file, never to a number
    typed into a form, and only with a notice addressed to the contact on
    file (not with a copy for the applicant alone). Without a number on file
    the notice goes by e-mail.
    """
    channels = settings.NOTIFICATION_CHANNELS
    if notice.kind not in SMS_KINDS or notice.case is None:
        return [notice]
    merchant = notice.case.merchant
    if merchant.contact_email and merchant.contact_email.lower() not in {
        r.lower() for r in notice.recipients
    }:
        return [notice]  # a copy for someone else (the applicant): no SMS
    phone = merchant.contact_phone
    rows = [notice] if EMAIL in channels or not (SMS in channels and phone) else []
    if SMS in channels and phone:
        rows.append(
            Notification(
                case=notice.case,
                kind=notice.kind,
                channel=SMS,
                recipients=[phone],
                dedupe_key=f"{notice.dedupe_key}:sms",
                context={**notice.context, FALLBACK_KEY: list(notice.recipients)},
                language=notice.language,
                queued_at=notice.queued_at,
            )
        )
    return rows


def sms_fallback(*, notification_id: int) -> Notification | None:
    """Queue the e-mail of a failed SMS, unless that e-mail exists already.

    Call inside the transaction that marks the SMS failed.
    """
    # cases.notifications imports this module at load: importing it here at
    # the top would be circular.
    from cases.notifications import notification_dispatch

    sms = Notification.objects.filter(pk=notification_id, channel=SMS).first()
    if sms is None:
        return None
    context = {k: v for k, v in sms.context.items() if k != FALLBACK_KEY}
    email, created = Notification.objects.get_or_create(
        dedupe_key=sms.dedupe_key.removesuffix(":sms"),
        defaults={
            "case": sms.case,
            "kind": sms.kind,
            "channel": EMAIL,
            "recipients": sms.context.get(FALLBACK_KEY) or [],
            "context": context,
            "language": sms.language,
            "queued_at": sms.queued_at,
        },
    )
    if created and email.recipients:
        logger.info("SMS %s failed; e-mail %s instead", sms.pk, email.pk)
        notification_dispatch(notification_id=email.pk)
    return email if created else None
