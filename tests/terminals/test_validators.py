"""Identifier validators and masking: known values and properties (hypothesis)."""

from datetime import date

import pytest
from django.core.exceptions import ValidationError
from hypothesis import given
from hypothesis import strategies as st
from stdnum import luhn
from stdnum.cn import ric, uscc

from terminals import identifiers, validators
from terminals.masking import mask_card_number, mask_email, mask_id_number, mask_phone

USCC_ALPHABET = "0123456789ABCDEFGHJKLMNPQRTUWXY"
RIC_CHECK_CHARS = "0123456789X"
# Area codes with a first birth year; any division is accepted for any birth
# year (tests/terminals/test_real_identifiers.py), these are a sample.
RIC_AREAS = [("110101", 1950), ("310101", 1950), ("120101", 1950), ("440305", 1990)]


def is_valid(validator, value: str) -> bool:
    try:
        validator(value)
    except ValidationError:
        return False
    return True


# ------------------------------------------------------------------------------
# Known values
# ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("validator", "value"),
    [
        (validators.validate_uscc, "91110000600037341L"),
        (validators.validate_uscc, identifiers.make_uscc(42)),
        (validators.validate_resident_id, "11010519491231002X"),
        (validators.validate_resident_id, identifiers.make_resident_id(7)),
        (validators.validate_bank_card, "4111111111111111"),
        (validators.validate_bank_card, "6222020200000000014"),  # 19 digits
        (validators.validate_bank_card, identifiers.make_bank_card(3)),
        (validators.validate_mobile, "13800138000"),
        (validators.validate_mobile, "19912345678"),
        (validators.validate_merchant_id, "898110000000001"),
        (validators.validate_terminal_id, "12345678"),
        (validators.validate_terminal_id, "A1B2C3D4"),
        (validators.validate_serial_number, "SN0000000001"),
        (validators.validate_serial_number, "PAXA9200001"),
    ],
)
def test_known_valid_values_pass(validator, value):
    validator(value)


@pytest.mark.parametrize(
    ("validator", "value"),
    [
        (validators.validate_uscc, "91110000600037341M"),  # wrong check character
        (validators.validate_uscc, "A1110000600037341L"),  # letter in the digits part
        (validators.validate_uscc, "9111000060003734IL"),  # I is not in the alphabet
        (validators.validate_uscc, "91110000600037341"),  # 17 characters
        (validators.validate_uscc, ""),
        (validators.validate_resident_id, "110105194912310021"),  # wrong check digit
        (validators.validate_resident_id, "11010519491331002X"),  # month 13
        (validators.validate_resident_id, "99010519491231002X"),  # no such area
        (validators.validate_resident_id, "110105491231002"),  # old 15-digit form
        (validators.validate_resident_id, "1101051949123100AX"),
        (validators.validate_bank_card, "4111111111111112"),  # Luhn fails
        (validators.validate_bank_card, "411111111111111"),  # 15 digits
        (validators.validate_bank_card, "4111 1111 1111 1111"),
        (validators.validate_mobile, "12800138000"),  # no 12x numbers
        (validators.validate_mobile, "1380013800"),  # 10 digits
        (validators.validate_mobile, "+8613800138000"),
        (validators.validate_merchant_id, "89811000000000"),  # 14 digits
        (validators.validate_merchant_id, "89811000000000A"),
        (validators.validate_terminal_id, "1234567"),
        (validators.validate_terminal_id, "abcd1234"),
        (validators.validate_serial_number, "SN1"),  # too short
        (validators.validate_serial_number, "sn0000000001"),  # not normalised
        (validators.validate_serial_number, "-SN00001"),
        (validators.validate_serial_number, "PAX-A920-0001"),  # not normalised
        (validators.validate_serial_number, "SN 0001"),
    ],
)
def test_known_invalid_values_fail(validator, value):
    with pytest.raises(ValidationError):
        validator(value)


def test_normalise_code_strips_spaces_and_dashes_and_upper_cases():
    assert validators.normalise_code(" 9111-0000 60003734 1l ") == "91110000600037341L"


@pytest.mark.parametrize(
    ("validator", "value"),
    [
        (validators.validate_uscc, "91110000600037341l"),
        (validators.validate_resident_id, "11010519491231002x"),
    ],
)
def test_lower_case_check_letters_are_rejected(validator, value):
    with pytest.raises(ValidationError):
        validator(value)


# ------------------------------------------------------------------------------
# Properties
# ------------------------------------------------------------------------------


@st.composite
def valid_usccs(draw) -> str:
    head = draw(st.sampled_from("123456789ANY")) + draw(
        st.text(alphabet="123459", min_size=1, max_size=1)
    )
    organisation = draw(st.text(alphabet=USCC_ALPHABET, min_size=8, max_size=8))
    body = (
        head
        + draw(st.text(alphabet="0123456789", min_size=6, max_size=6))
        + organisation
        + validators.organisation_code_check_char(organisation)
    )
    return body + uscc.calc_check_digit(body)


@st.composite
def valid_resident_ids(draw) -> str:
    area, first_year = draw(st.sampled_from(RIC_AREAS))
    birth = draw(
        st.dates(min_value=date(first_year, 1, 1), max_value=date(2008, 12, 31))
    )
    sequence = draw(st.integers(min_value=0, max_value=999))
    body = f"{area}{birth:%Y%m%d}{sequence:03d}"
    return body + ric.calc_check_digit(body + "0")


@st.composite
def valid_cards(draw) -> str:
    body = draw(st.text(alphabet="0123456789", min_size=15, max_size=18))
    return body + luhn.calc_check_digit(body)


def substitute(value: str, position: int, char: str) -> str:
    return value[:position] + char + value[position + 1 :]


@given(valid_usccs())
def test_every_generated_uscc_passes(value):
    validators.validate_uscc(value)


@given(valid_usccs(), st.data())
def test_any_other_uscc_check_character_fails(value, data):
    wrong = data.draw(st.sampled_from(USCC_ALPHABET.replace(value[-1], "")))
    assert not is_valid(validators.validate_uscc, substitute(value, 17, wrong))


@given(valid_usccs(), st.data())
def test_any_single_uscc_substitution_fails(value, data):
    position = data.draw(st.integers(min_value=8, max_value=16))
    wrong = data.draw(st.sampled_from(USCC_ALPHABET.replace(value[position], "")))
    assert not is_valid(validators.validate_uscc, substitute(value, position, wrong))


@given(valid_resident_ids())
def test_every_generated_resident_id_passes(value):
    validators.validate_resident_id(value)


@given(valid_resident_ids(), st.data())
def test_any_other_resident_id_check_digit_fails(value, data):
    wrong = data.draw(st.sampled_from(RIC_CHECK_CHARS.replace(value[-1], "")))
    assert not is_valid(validators.validate_resident_id, substitute(value, 17, wrong))


@given(valid_resident_ids(), st.data())
def test_any_single_resident_id_digit_substitution_fails(value, data):
    position = data.draw(st.integers(min_value=0, max_value=16))
    wrong = data.draw(st.sampled_from("0123456789".replace(value[position], "")))
    assert not is_valid(
        validators.validate_resident_id, substitute(value, position, wrong)
    )


@given(valid_cards())
def test_every_generated_card_passes(value):
    validators.validate_bank_card(value)


@given(valid_cards(), st.data())
def test_any_single_card_digit_substitution_fails(value, data):
    position = data.draw(st.integers(min_value=0, max_value=len(value) - 1))
    wrong = data.draw(st.sampled_from("0123456789".replace(value[position], "")))
    assert not is_valid(
        validators.validate_bank_card, substitute(value, position, wrong)
    )


@given(st.integers(min_value=0, max_value=10**9 - 1))
def test_identifier_generators_make_valid_numbers(n):
    validators.validate_merchant_id(identifiers.make_merchant_id(n))
    validators.validate_uscc(identifiers.make_uscc(n))
    validators.validate_resident_id(identifiers.make_resident_id(n))
    validators.validate_bank_card(identifiers.make_bank_card(n))
    validators.validate_serial_number(identifiers.make_serial_number(n))
    validators.validate_terminal_id(identifiers.make_terminal_id(n % 10**8))


@given(st.from_regex(r"1[3-9]\d{9}", fullmatch=True))
def test_every_mainland_mobile_passes(value):
    validators.validate_mobile(value)


@given(st.text(alphabet="0123456789", max_size=30).filter(lambda s: len(s) != 15))
def test_merchant_number_of_another_length_fails(value):
    assert not is_valid(validators.validate_merchant_id, value)


# ------------------------------------------------------------------------------
# Masking
# ------------------------------------------------------------------------------


def revealed(masked: str, original: str) -> list[int]:
    """Positions where the masked text shows the original character."""
    assert len(masked) == len(original)
    return [
        i for i, (m, o) in enumerate(zip(masked, original, strict=True)) if m != "*"
    ]


DIGITS_AND_X = st.text(alphabet="0123456789X", max_size=25)


@given(DIGITS_AND_X)
def test_id_mask_shows_at_most_the_first_3_and_last_4(value):
    masked = mask_id_number(value)

    shown = revealed(masked, value)

    assert len(shown) <= 7
    assert len(shown) <= max(0, len(value) - 1) or not value
    assert all(i < 3 or i >= len(value) - 4 for i in shown)
    assert all(masked[i] == value[i] for i in shown)


@given(st.text(alphabet="0123456789", max_size=25))
def test_card_mask_shows_at_most_the_first_6_and_last_4(value):
    masked = mask_card_number(value)

    shown = revealed(masked, value)

    assert len(shown) <= 10
    assert all(i < 6 or i >= len(value) - 4 for i in shown)
    if len(value) <= 10:
        assert shown == []


@given(valid_cards())
def test_a_full_card_number_is_never_recoverable(value):
    masked = mask_card_number(value)

    assert masked.count("*") == len(value) - 10
    assert value not in masked


@given(valid_resident_ids())
def test_a_full_resident_id_is_never_recoverable(value):
    masked = mask_id_number(value)

    assert masked == value[:3] + "*" * 11 + value[-4:]


@given(st.text(alphabet="0123456789", max_size=15))
def test_phone_mask_hides_the_middle(value):
    shown = revealed(mask_phone(value), value)

    assert len(shown) <= 7
    assert all(i < 3 or i >= len(value) - 4 for i in shown)


@given(st.emails())
def test_email_mask_keeps_only_the_first_letter_and_the_domain(value):
    local, _, domain = value.partition("@")

    masked = mask_email(value)

    assert masked == f"{local[:1]}***@{domain}"


def test_empty_values_mask_to_empty():
    assert mask_id_number("") == mask_card_number("") == mask_phone("") == ""
    assert mask_email("") == ""
