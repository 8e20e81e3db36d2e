"""Generate valid identifiers for demo data, tests and benchmarks."""

from stdnum import luhn
from stdnum.cn import ric, uscc

from terminals.validators import organisation_code_check_char


def make_merchant_id(n: int) -> str:
    """Return the ``n``-th demo merchant number (15 digits, prefix 898)."""
    return f"898{n:012d}"


def make_uscc(n: int) -> str:
    """Return a valid unified social credit code numbered ``n`` (mod 10**8).

    An enterprise (91) of Beijing whose organisation code carries its own
    GB 11714 check character, as GB 32100-2015 requires.
    """
    organisation = f"{n % 10**8:08d}"
    body = f"91110000{organisation}{organisation_code_check_char(organisation)}"
    return body + uscc.calc_check_digit(body)


def make_resident_id(n: int, *, birth: str = "19800101") -> str:
    """Return a valid 18-character resident ID numbered ``n`` (Beijing, Dongcheng)."""
    body = f"110101{birth}{n % 1000:03d}"
    return body + ric.calc_check_digit(body + "0")


def make_bank_card(n: int) -> str:
    """Return a valid 16-digit card number (Luhn) numbered ``n``."""
    body = f"622202{n:09d}"
    return body + luhn.calc_check_digit(body)


def make_serial_number(n: int) -> str:
    return f"SN{n:010d}"


def make_terminal_id(n: int) -> str:
    return f"{n:08d}"
