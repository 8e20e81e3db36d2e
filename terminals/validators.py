"""Validators for the Chinese identifiers of the registry.

The check-character algorithms come from python-stdnum: ``stdnum.cn.uscc``
(GB 32100-2015), ``stdnum.cn.ric`` (ISO 7064 MOD 11-2) and ``stdnum.luhn``.
"""

import re

from django.core.exceptions import ValidationError
from django.utils.translation import gettext_lazy as _
from stdnum import luhn
from stdnum.cn import ric, uscc
from stdnum.exceptions import ValidationError as StdnumError

MERCHANT_ID_RE = re.compile(r"^\d{15}$")
TERMINAL_ID_RE = re.compile(r"^[0-9A-Z]{8}$")
MOBILE_RE = re.compile(r"^1[3-9]\d{9}$")
SERIAL_NUMBER_RE = re.compile(r"^[0-9A-Z][0-9A-Z-]{3,31}$")


def normalise_code(value: str) -> str:
    """Strip spaces and dashes a person may type and upper-case the letters."""
    return re.sub(r"[\s-]", "", value or "").upper()


def validate_merchant_id(value: str) -> None:
    if not MERCHANT_ID_RE.fullmatch(value or ""):
        raise ValidationError(
            _("A merchant number is 15 digits."), code="invalid_merchant_id"
        )


def validate_terminal_id(value: str) -> None:
    if not TERMINAL_ID_RE.fullmatch(value or ""):
        raise ValidationError(
            _("A terminal ID is 8 digits or capital letters."),
            code="invalid_terminal_id",
        )


def validate_serial_number(value: str) -> None:
    if not SERIAL_NUMBER_RE.fullmatch(value or ""):
        raise ValidationError(
            _("A serial number is 4 to 32 capital letters, digits or dashes."),
            code="invalid_serial_number",
        )


def validate_mobile(value: str) -> None:
    if not MOBILE_RE.fullmatch(value or ""):
        raise ValidationError(
            _("A mainland mobile number is 11 digits starting with 1."),
            code="invalid_mobile",
        )


def validate_uscc(value: str) -> None:
    """Check the 18 characters and the GB 32100-2015 check character."""
    if len(value or "") != 18:
        raise ValidationError(
            _("A unified social credit code is 18 characters."), code="invalid_uscc"
        )
    if value != value.upper():
        # stdnum upper-cases before checking; stored codes must be canonical.
        raise ValidationError(
            _("This unified social credit code is not valid (check character)."),
            code="invalid_uscc",
        )
    try:
        uscc.validate(value)
    except StdnumError:
        raise ValidationError(
            _("This unified social credit code is not valid (check character)."),
            code="invalid_uscc",
        ) from None


def validate_resident_id(value: str) -> None:
    """Check an 18-character resident ID: birth date and MOD 11-2 check digit."""
    if len(value or "") != 18:
        raise ValidationError(
            _("A resident identity card number is 18 characters."),
            code="invalid_resident_id",
        )
    if value != value.upper():
        raise ValidationError(
            _("This resident identity card number is not valid."),
            code="invalid_resident_id",
        )
    try:
        ric.validate(value)
    except StdnumError:
        raise ValidationError(
            _("This resident identity card number is not valid."),
            code="invalid_resident_id",
        ) from None


def validate_bank_card(value: str) -> None:
    """Check a 16 to 19 digit card number with the Luhn algorithm."""
    if not re.fullmatch(r"\d{16,19}", value or ""):
        raise ValidationError(
            _("A bank card number is 16 to 19 digits."), code="invalid_bank_card"
        )
    try:
        luhn.validate(value)
    except StdnumError:
        raise ValidationError(
            _("This bank card number is not valid (check digit)."),
            code="invalid_bank_card",
        ) from None
