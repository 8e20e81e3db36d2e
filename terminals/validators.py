"""Validators for the Chinese identifiers of the registry.

The check-character algorithms come from python-stdnum: ``stdnum.cn.uscc``
(GB 32100-2015), ``stdnum.cn.ric`` (ISO 7064 MOD 11-2) and ``stdnum.luhn``.
The rules around them are this module's own: stdnum's ``validate`` functions
refuse real numbers (a resident ID whose division is younger than its holder,
a USCC of authority N) and accept impossible ones (docs/security.md, "Issue 11").
"""

import re
import unicodedata
from datetime import UTC, date, datetime, timedelta

from django.core.exceptions import ValidationError
from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from stdnum import luhn
from stdnum.cn import ric, uscc
from stdnum.exceptions import ValidationError as StdnumError

MERCHANT_ID_RE = re.compile(r"^\d{15}$")
TERMINAL_ID_RE = re.compile(r"^[0-9A-Z]{8}$")
MOBILE_RE = re.compile(r"^1[3-9]\d{9}$")
# The canonical serial number: what normalise_serial_number returns.
SERIAL_NUMBER_RE = re.compile(r"^[0-9A-Z]{4,32}$")
# White space and dashes a person types inside a code.
CODE_SEPARATORS_RE = re.compile(r"[\s-]")
# White space and dashes (ASCII, Unicode and full-width) inside a serial: a
# label prints "AB-1234" or "AB 1234", a merchant types "ab1234".
SERIAL_SEPARATORS_RE = re.compile(r"[\s\-\u2010-\u2015\u2212\ufe63\uff0d]+")


def normalise_code(value: str) -> str:
    """Strip spaces and dashes a person may type and upper-case the letters."""
    return CODE_SEPARATORS_RE.sub("", value or "").upper()


def normalise_mobile(value: str) -> str:
    """Strip spaces, dashes and the country code (+86, 0086) from a mobile number."""
    value = normalise_code(value)
    for prefix in ("+86", "0086"):
        if value.startswith(prefix) and len(value) == len(prefix) + 11:
            return value.removeprefix(prefix)
    return value


def normalise_serial_number(value: str) -> str:
    """Return the canonical form of a terminal serial number.

    The one normalisation of serial numbers: the registry import stores it,
    and every lookup (status page, request form, admin searches, API) passes
    what a person typed through it, so "ab-1234", "AB 1234" and "ＡＢ１２３４"
    all find terminal AB1234. Full-width characters become ASCII (NFKC), white
    space and dashes go, letters are upper-cased.
    """
    value = unicodedata.normalize("NFKC", value or "")
    return SERIAL_SEPARATORS_RE.sub("", value).upper()


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


# GB 32100-2015: the registration authority (1 机构编制 … 9 工商, A 军队,
# N 农业, Y 其他) and, within it, the kind of organisation (a digit).
USCC_AUTHORITY_CHARS = "123456789ANY"
USCC_ALPHABET = "0123456789ABCDEFGHJKLMNPQRTUWXY"
USCC_RE = re.compile(rf"^[{USCC_AUTHORITY_CHARS}][1-9]\d{{6}}[{USCC_ALPHABET}]{{10}}$")
# GB 11714 organisation code: 8 characters, then 11 - (Σ value × weight) mod 11.
ORGANISATION_CODE_WEIGHTS = (3, 7, 9, 10, 5, 8, 4, 2)

# Province-level codes of GB/T 2260 that begin a resident ID number, plus
# 81/82/83: the residence permits of Hong Kong, Macao and Taiwan residents
# (港澳台居民居住证, since 2018) are 18-character numbers of the same format
# and check, and such a holder may be a merchant's legal representative.
PROVINCE_CODES = frozenset(
    {"11", "12", "13", "14", "15", "21", "22", "23"}
    | {f"{n}" for n in range(31, 38)}
    | {f"{n}" for n in range(41, 47)}
    | {f"{n}" for n in range(50, 55)}
    | {f"{n}" for n in range(61, 66)}
    | {"71", "81", "82", "83"}
)
RESIDENT_ID_RE = re.compile(r"^(\d{6})(\d{4})(\d{2})(\d{2})\d{3}[0-9X]$")
EARLIEST_BIRTH_YEAR = 1900


def organisation_code_check_char(body: str) -> str:
    """Return the GB 11714 check character of an 8-character organisation code."""
    total = sum(
        int(char, 36) * weight
        for char, weight in zip(body, ORGANISATION_CODE_WEIGHTS, strict=True)
    )
    check = 11 - total % 11
    return {10: "X", 11: "0"}.get(check, str(check))


def validate_uscc(value: str) -> None:
    """Check a unified social credit code the way GB 32100-2015 builds it.

    Authority and kind characters, a six-digit division (never compared with a
    table: a code keeps the division of its first registration), the
    organisation code with its own GB 11714 check character, and the final
    MOD 31 check character. ``stdnum.cn.uscc`` alone refuses the authorities
    A, N and Y (e.g. a village collective, N2…) and accepts a leading 0.
    """
    if len(value or "") != 18:
        raise ValidationError(
            _("A unified social credit code is 18 characters."), code="invalid_uscc"
        )
    invalid = ValidationError(
        _("This unified social credit code is not valid (check character)."),
        code="invalid_uscc",
    )
    # Lower case is refused: stored codes must be canonical.
    if not USCC_RE.fullmatch(value):
        raise invalid
    if organisation_code_check_char(value[8:16]) != value[16]:
        raise invalid
    if uscc.calc_check_digit(value[:17]) != value[17]:
        raise invalid


def validate_resident_id(value: str) -> None:
    """Check an 18-character resident ID number.

    Format, a province-level prefix, a real birth date (from 1900, not in the
    future) and the ISO 7064 MOD 11-2 check character. The six-digit division
    is where the number was first issued, often a division created after the
    holder's birth, so it is never compared with the divisions of the birth
    year (``stdnum.cn.ric.validate`` does, and refuses most real people).
    """
    if len(value or "") != 18:
        raise ValidationError(
            _("A resident identity card number is 18 characters."),
            code="invalid_resident_id",
        )
    invalid = ValidationError(
        _("This resident identity card number is not valid."),
        code="invalid_resident_id",
    )
    match = RESIDENT_ID_RE.fullmatch(value)
    if match is None or match[1][:2] not in PROVINCE_CODES:
        raise invalid
    try:
        birth = date(int(match[2]), int(match[3]), int(match[4]))
    except ValueError:
        raise invalid from None
    # The local date is at most a day off the machine's: only a birth date
    # within the last days needs the (slower) time-zone-aware comparison.
    if birth.year < EARLIEST_BIRTH_YEAR or (
        birth > datetime.now(UTC).date() - timedelta(days=2)
        and birth > timezone.localdate()
    ):
        raise invalid
    if ric.calc_check_digit(value) != value[17]:
        raise invalid


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
