"""SMS backends: the console (development) and an HTTP gateway (Aliyun's shape).

``AliyunBackend`` sends Aliyun Dysms ``SendSms`` (API version 2017-05-25)
with its RPC signature (HMAC-SHA1), a template code, the template parameters
as JSON and the sign name, to ``SMS_URL``. It is a small client with the
request shape of the official SDK, which pulls in a dozen ``alibabacloud-*``
packages for this one call. Tencent Cloud SMS and others take the same three
things (template, parameters, sign name); a backend for them is another class
with a ``send(message)`` method, named by its dotted path in ``SMS_BACKEND``.
"""

import base64
import hashlib
import hmac
import json
import logging
import uuid
from datetime import UTC, datetime
from urllib.parse import quote

import requests
from django.conf import settings

from cases.sms import SmsError, SmsMessage, SmsRefused
from terminals.masking import mask_phone

logger = logging.getLogger(__name__)

# Aliyun answers worth retrying: their system errors and flow control.
ALIYUN_TRANSIENT_CODES = frozenset(
    {
        "isp.SYSTEM_ERROR",
        "isv.BUSINESS_LIMIT_CONTROL",
        "Throttling",
        "Throttling.User",
        "ServiceUnavailable",
    }
)


class ConsoleBackend:
    """Log the SMS with the number masked (the default; nothing leaves the machine).

    A verification code is logged only with DEBUG on (``make run``): logs of
    a production that forgot to set SMS_BACKEND must not hold live codes.
    """

    def send(self, message: SmsMessage) -> None:
        text = message.text
        code = str(message.params.get("code") or "")
        if code and not settings.DEBUG:
            text = text.replace(code, "*" * len(code))
        logger.info("SMS to %s: %s", mask_phone(message.phone), text)


def _percent(value: str) -> str:
    return quote(str(value), safe="~")


def aliyun_signature(*, params: dict, secret: str, method: str = "POST") -> str:
    """Aliyun's RPC signature of ``params`` (without ``Signature``)."""
    canonical = "&".join(
        f"{_percent(k)}={_percent(v)}" for k, v in sorted(params.items())
    )
    to_sign = f"{method}&{_percent('/')}&{_percent(canonical)}"
    digest = hmac.new(f"{secret}&".encode(), to_sign.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


class AliyunBackend:
    """Send through Aliyun Dysms SendSms (or any gateway with its request shape)."""

    def send(self, message: SmsMessage) -> None:
        if not message.template:
            raise SmsRefused(f"no SMS template for {message.kind} (SMS_TEMPLATES)")
        params = {
            "AccessKeyId": settings.SMS_ACCESS_KEY_ID,
            "Action": "SendSms",
            "Format": "JSON",
            "OutId": str(message.notification_id),
            "PhoneNumbers": message.phone,
            "RegionId": "cn-hangzhou",
            "SignName": settings.SMS_SIGN_NAME,
            "SignatureMethod": "HMAC-SHA1",
            "SignatureNonce": uuid.uuid4().hex,
            "SignatureVersion": "1.0",
            "TemplateCode": message.template,
            "TemplateParam": json.dumps(
                {k: str(v) for k, v in message.params.items()}, ensure_ascii=False
            ),
            "Timestamp": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "Version": "2017-05-25",
        }
        params["Signature"] = aliyun_signature(
            params=params, secret=settings.SMS_ACCESS_KEY_SECRET
        )
        try:
            response = requests.post(
                settings.SMS_URL, data=params, timeout=settings.SMS_TIMEOUT
            )
        except requests.RequestException as exc:
            raise SmsError(f"{type(exc).__name__}: {exc}"[:300]) from exc
        if response.status_code >= 500 or response.status_code == 429:
            raise SmsError(f"gateway answered HTTP {response.status_code}")
        try:
            answer = response.json()
        except ValueError:
            answer = {}
        code = str(answer.get("Code", ""))
        if response.status_code == 200 and code == "OK":
            logger.info(
                "SMS %s to %s accepted (BizId %s)",
                message.notification_id,
                mask_phone(message.phone),
                answer.get("BizId", ""),
            )
            return
        error = f"{code or response.status_code}: {answer.get('Message', '')}"[:300]
        if code in ALIYUN_TRANSIENT_CODES:
            raise SmsError(error)
        raise SmsRefused(error)
