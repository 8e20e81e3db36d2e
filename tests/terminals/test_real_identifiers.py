"""Issue 11: identifiers as real people and firms hold them, not as a library's tables.

Each test here failed on the validators that leaned on python-stdnum alone:
``ric.validate`` refused a resident ID whose division did not exist in the
holder's birth year, and ``uscc.validate`` refused the authorities A, N and Y
and accepted a leading 0 or a broken organisation code.
"""

from datetime import date, timedelta

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone
from hypothesis import given, settings
from hypothesis import strategies as st
from stdnum import luhn
from stdnum.cn import ric, uscc

from terminals import validators

# GB/T 2260 province-level codes, and 81/82/83 of the residence permits of
# Hong Kong, Macao and Taiwan residents.
PROVINCES = [
    *("11", "12", "13", "14", "15", "21", "22", "23"),
    *(str(n) for n in range(31, 38)),
    *(str(n) for n in range(41, 47)),
    *(str(n) for n in range(50, 55)),
    *(str(n) for n in range(61, 66)),
    *("71", "81", "82", "83"),
]
RIC_CHECK_CHARS = "0123456789X"
USCC_ALPHABET = "0123456789ABCDEFGHJKLMNPQRTUWXY"
# GB 32100-2015 registration authorities: 1-9, A (army), N (agriculture), Y (other).
USCC_AUTHORITIES = "123456789ANY"


def organisation_check(body: str) -> str:
    """GB 11714 check character, computed independently of the code under test."""
    weights = (3, 7, 9, 10, 5, 8, 4, 2)
    values = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    check = (
        11 - sum(values.index(c) * w for c, w in zip(body, weights, strict=True)) % 11
    )
    return "X" if check == 10 else "0" if check == 11 else str(check)


def is_valid(validator, value: str) -> bool:
    try:
        validator(value)
    except ValidationError:
        return False
    return True


def resident_id(body: str) -> str:
    """Complete a 17-digit body with its MOD 11-2 check character."""
    return body + ric.calc_check_digit(body + "0")


def with_wrong_check(value: str, char: str) -> str:
    return value[:-1] + char


# --- resident ID numbers ---------------------------------------------------------


@st.composite
def real_resident_ids(draw) -> str:
    province = draw(st.sampled_from(PROVINCES))
    rest_of_division = draw(st.integers(min_value=0, max_value=9999))
    birth = draw(st.dates(min_value=date(1930, 1, 1), max_value=date(2010, 12, 31)))
    sequence = draw(st.integers(min_value=0, max_value=999))
    return resident_id(f"{province}{rest_of_division:04d}{birth:%Y%m%d}{sequence:03d}")


@settings(max_examples=300)
@given(real_resident_ids())
def test_any_province_any_division_any_birth_year_with_the_right_check_passes(value):
    validators.validate_resident_id(value)


@settings(max_examples=300)
@given(real_resident_ids(), st.data())
def test_a_wrong_check_character_is_refused_for_every_province(value, data):
    wrong = data.draw(st.sampled_from(RIC_CHECK_CHARS.replace(value[-1], "")))

    assert not is_valid(validators.validate_resident_id, with_wrong_check(value, wrong))


@pytest.mark.parametrize(
    "value",
    [
        "330106197804043439",  # 杭州西湖区, a division younger than its holder
        resident_id("31011519650817123"),  # 浦东新区 (1993), born in the 1960s
        resident_id("31011519320101004"),  # 浦东新区, born 1932
        resident_id("44030519881231002"),  # 深圳南山区 (1990), born 1988
        resident_id("11010519491231002"),  # 北京朝阳区
        resident_id("65010219800229001"),  # leap day
        resident_id("83000019900101001"),  # residence permit, Taiwan resident
        resident_id("81000019900101001"),  # residence permit, Hong Kong resident
    ],
)
def test_real_looking_numbers_pass(value):
    validators.validate_resident_id(value)


def test_the_library_refused_a_genuine_number():
    """The defect: stdnum ties the division to the birth year."""
    assert not ric.is_valid("330106197804043439")
    validators.validate_resident_id("330106197804043439")


def tomorrow_body() -> str:
    tomorrow = timezone.localdate() + timedelta(days=1)
    return f"110101{tomorrow:%Y%m%d}001"


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(lambda: resident_id(tomorrow_body()), id="born-tomorrow"),
        pytest.param(lambda: resident_id("11010120990101001"), id="born-2099"),
        pytest.param(lambda: resident_id("11010118991231001"), id="born-1899"),
        pytest.param(lambda: resident_id("11010119800230001"), id="feb-30"),
        pytest.param(lambda: resident_id("11010119810229001"), id="feb-29-1981"),
        pytest.param(lambda: resident_id("11010119801301001"), id="month-13"),
        pytest.param(lambda: resident_id("11010119800100001"), id="day-0"),
        pytest.param(lambda: resident_id("99010519491231002"), id="province-99"),
        pytest.param(lambda: resident_id("00010119800101001"), id="province-00"),
        pytest.param(lambda: resident_id("16010119800101001"), id="province-16"),
        pytest.param(lambda: "330106197804043438", id="wrong-check"),
        pytest.param(lambda: "33010619780404343x", id="lower-case-x"),
        pytest.param(lambda: "3301061978040434", id="16-chars"),
        pytest.param(lambda: "33010619780404343A", id="letter-check"),
    ],
)
def test_impossible_numbers_are_refused(value):
    assert not is_valid(validators.validate_resident_id, value())


def test_1900_is_the_earliest_birth_year():
    validators.validate_resident_id(resident_id("11010119000101001"))


# --- unified social credit codes -------------------------------------------------


def make_uscc(head: str, organisation: str) -> str:
    """Build a code from its head (authority, kind, division) and 8-char org body."""
    body = head + organisation + organisation_check(organisation)
    return body + uscc.calc_check_digit(body)


@pytest.mark.parametrize(
    "value",
    [
        "91110000600037341L",  # 北京, enterprise
        "9144030071526726XG",  # 深圳, enterprise (org code check X)
        "91330100716105852F",  # 杭州, enterprise
        make_uscc("92440300", "MA5D1234"),  # individual business, letters
        make_uscc("93320500", "MA1N0001"),  # farmers' cooperative
        make_uscc("N2440111", "MF000012"),  # village collective (authority N)
        make_uscc("Y1110000", "50000123"),  # other authority
        make_uscc("A1100000", "00000123"),  # army institution (authority A)
        make_uscc("11100000", "00001312"),  # national-level organ, division 100000
        make_uscc("52460000", "MJ000012"),  # 民政: social organisation
    ],
)
def test_real_looking_codes_pass(value):
    validators.validate_uscc(value)


def test_the_library_refused_a_village_collective():
    value = make_uscc("N2440111", "MF000012")

    assert not uscc.is_valid(value)
    validators.validate_uscc(value)


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("91110000600037341M", id="wrong-check"),
        pytest.param(make_uscc("01110000", "60003734"), id="authority-0"),
        pytest.param(make_uscc("B1110000", "60003734"), id="authority-B"),
        pytest.param(make_uscc("90110000", "60003734"), id="kind-0"),
        pytest.param(make_uscc("9A110000", "60003734"), id="kind-letter"),
        pytest.param(make_uscc("9111A000", "60003734"), id="letter-in-division"),
        pytest.param(
            # The library's own example body with the organisation check broken
            # and the final check recomputed: stdnum accepts it.
            "911100006000373420"[:17] + uscc.calc_check_digit("91110000600037342"),
            id="org-code-check",
        ),
    ],
)
def test_malformed_codes_are_refused(value):
    assert not is_valid(validators.validate_uscc, value)


def test_the_library_accepted_a_broken_organisation_code():
    value = "91110000600037342" + uscc.calc_check_digit("91110000600037342")

    assert uscc.is_valid(value)
    assert not is_valid(validators.validate_uscc, value)


@st.composite
def real_usccs(draw) -> str:
    authority = draw(st.sampled_from(USCC_AUTHORITIES))
    kind = draw(st.sampled_from("123459"))
    division = draw(st.integers(min_value=100000, max_value=829999))
    organisation = draw(st.text(alphabet=USCC_ALPHABET, min_size=8, max_size=8))
    return make_uscc(f"{authority}{kind}{division}", organisation)


@given(real_usccs())
def test_any_authority_division_and_organisation_passes(value):
    validators.validate_uscc(value)


@given(real_usccs(), st.data())
def test_a_wrong_uscc_check_character_is_refused(value, data):
    wrong = data.draw(st.sampled_from(USCC_ALPHABET.replace(value[-1], "")))

    assert not is_valid(validators.validate_uscc, value[:-1] + wrong)


# --- mobile numbers ---------------------------------------------------------------


@pytest.mark.parametrize(
    "segment",
    [
        *range(130, 140),
        *range(140, 150),  # 14x: data cards and newer carriers' numbers
        *range(150, 160),
        162,
        *range(165, 168),
        *range(170, 180),
        *range(180, 190),
        *range(190, 200),  # incl. 192 (China Broadnet)
    ],
)
def test_current_mobile_segments_pass(segment):
    validators.validate_mobile(f"{segment}12345678")


@pytest.mark.parametrize("segment", [*range(100, 130)])
def test_no_mobile_number_starts_10_11_or_12(segment):
    assert not is_valid(validators.validate_mobile, f"{segment}12345678")


# --- bank cards -----------------------------------------------------------------


@st.composite
def unionpay_cards(draw) -> str:
    length = draw(st.integers(min_value=16, max_value=19))
    body = "62" + draw(
        st.text(alphabet="0123456789", min_size=length - 3, max_size=length - 3)
    )
    return body + luhn.calc_check_digit(body)


@given(unionpay_cards())
def test_unionpay_cards_of_16_to_19_digits_pass(value):
    validators.validate_bank_card(value)


@given(unionpay_cards(), st.data())
def test_a_unionpay_card_with_a_wrong_last_digit_is_refused(value, data):
    wrong = data.draw(st.sampled_from("0123456789".replace(value[-1], "")))

    assert not is_valid(validators.validate_bank_card, value[:-1] + wrong)


@pytest.mark.parametrize(
    "value",
    ["6222021234567890128", "6217000010000000003", "6228480402564890018"],
)
def test_nineteen_digit_debit_cards_pass(value):
    validators.validate_bank_card(value)


@pytest.mark.parametrize("value", ["622202123456789", "62220212345678901234"])
def test_card_numbers_outside_16_to_19_digits_are_refused(value):
    body = value[:-1]
    assert not is_valid(
        validators.validate_bank_card, body + luhn.calc_check_digit(body)
    )


# --- through the importer and the request form --------------------------------


def registry_with(*, legal_rep_id_number: str, uscc_code: str) -> dict:
    from terminals import identifiers

    return {
        "merchants": [
            {
                "merchant_id": identifiers.make_merchant_id(1),
                "uscc": uscc_code,
                "name": "西湖茶庄",
                "legal_rep_name": "王芳",
                "legal_rep_id_number": legal_rep_id_number,
                "contact_email": "shop@xihu.example.com",
                "contact_phone": "19212345678",
                "settlement_card_number": "6228480402564890018",
            }
        ],
        "terminals": [
            {
                "serial_number": identifiers.make_serial_number(1),
                "terminal_id": identifiers.make_terminal_id(1),
                "model": "PAX A920",
                "kind": "smart",
                "merchant_id": identifiers.make_merchant_id(1),
            }
        ],
        "transactions": [],
    }


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("id_number", "code"),
    [
        ("330106197804043439", "91330100716105852F"),
        (resident_id("31011519650817123"), make_uscc("N2310115", "MF000012")),
    ],
)
def test_a_registry_with_real_identifiers_imports(id_number, code):
    from terminals.importer import registry_import
    from terminals.models import Merchant

    # when
    registry_import(data=registry_with(legal_rep_id_number=id_number, uscc_code=code))

    # then
    merchant = Merchant.objects.get()
    assert merchant.legal_rep_id_number == id_number
    assert merchant.uscc == code


@pytest.mark.django_db
def test_a_registry_with_a_wrong_check_character_is_refused():
    from terminals.importer import RegistryImportError, registry_import
    from terminals.models import Merchant

    data = registry_with(
        legal_rep_id_number="330106197804043438", uscc_code="91330100716105852F"
    )

    with pytest.raises(RegistryImportError) as raised:
        registry_import(data=data)

    assert raised.value.field == "legal_rep_id_number"
    assert not Merchant.objects.exists()


@pytest.mark.django_db
def test_a_merchant_with_real_identifiers_can_file_a_request(hooks_client):
    """The request form takes the USCC (not the ID number): both reach the queue."""
    from http import HTTPStatus

    from django.urls import reverse

    from cases.models import Case
    from terminals.importer import registry_import
    from terminals.models import Merchant, Terminal
    from tests.cases.test_intake import form_data

    # given
    code = make_uscc("N2330106", "MF000012")
    registry_import(
        data=registry_with(legal_rep_id_number="330106197804043439", uscc_code=code)
    )
    merchant = Merchant.objects.get()

    # when
    response = hooks_client.post(
        reverse("cases:new"),
        form_data(
            merchant,
            list(Terminal.objects.all()),
            uscc=code.lower(),
            legal_rep_name="王芳",
            applicant_name="王芳",
        ),
    )

    # then
    assert response.status_code == HTTPStatus.FOUND, response.context["form"].errors
    assert Case.objects.get().merchant == merchant


@pytest.mark.parametrize(
    "typed",
    ["13800138000", "+86 138 0013 8000", "0086-138-0013-8000", "+8613800138000"],
)
def test_a_mobile_with_the_country_code_is_stored_without_it(typed):
    assert validators.normalise_mobile(typed) == "13800138000"


@pytest.mark.django_db
def test_the_registry_import_accepts_a_mobile_with_the_country_code():
    from terminals.importer import registry_import
    from terminals.models import Merchant

    data = registry_with(
        legal_rep_id_number="330106197804043439", uscc_code="91330100716105852F"
    )
    data["merchants"][0]["contact_phone"] = "+86 192-1234-5678"

    registry_import(data=data)

    assert Merchant.objects.get().contact_phone == "19212345678"


@pytest.mark.django_db
def test_the_import_registry_command_imports_a_real_legal_representative(tmp_path):
    import json
    from io import StringIO

    from django.core.management import call_command

    from terminals.models import Merchant

    # given
    path = tmp_path / "registry.json"
    data = registry_with(
        legal_rep_id_number="330106197804043439",
        uscc_code=make_uscc("N2330106", "MF000012"),
    )
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")

    # when
    call_command("import_registry", str(path), stdout=StringIO())

    # then
    assert Merchant.objects.get().legal_rep_id_number == "330106197804043439"
