"""Read-only queries on the terminal registry."""

from terminals.models import Binding
from terminals.validators import normalise_serial_number


def binding_status_check(*, merchant_id: str, serial_number: str) -> bool:
    """Tell whether terminal ``serial_number`` is actively bound to ``merchant_id``.

    One query. The answer is False alike for an unknown serial number, an
    unknown merchant, a terminal in stock and a terminal bound to someone else,
    so callers cannot learn anything about terminals that are not the merchant's.
    ``serial_number`` may be typed as printed (dashes, spaces, lower case).
    """
    return (
        Binding.objects.active()
        .filter(
            merchant__merchant_id=merchant_id,
            terminal__serial_number=normalise_serial_number(serial_number),
        )
        .exists()
    )
