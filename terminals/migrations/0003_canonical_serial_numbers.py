"""Store every terminal serial number in its canonical form (issue 11).

Serial numbers were stored as the registry printed them (``AB-1234``) while
the request form looked them up without dashes, so such a terminal could not
be found. From now on ``terminals.validators.normalise_serial_number`` is the
one form stored and looked up: upper case, no white space, no dashes.

Two rows whose serials differ only by dashes would become one terminal: the
migration stops and names them instead of guessing which one is real.
"""

import re
import unicodedata
from collections import Counter

from django.db import migrations

# A frozen copy of terminals.validators.normalise_serial_number at this migration.
SEPARATORS = re.compile(r"[\s\-\u2010-\u2015\u2212\ufe63\uff0d]+")


def canonical(value: str) -> str:
    return SEPARATORS.sub("", unicodedata.normalize("NFKC", value)).upper()


def canonicalise_serial_numbers(apps, schema_editor):
    Terminal = apps.get_model("terminals", "Terminal")
    changes = {}
    for pk, serial in (
        Terminal.objects.filter(serial_number__regex=r"[^0-9A-Z]")
        .order_by("pk")
        .values_list("pk", "serial_number")
        .iterator()
    ):
        changes[pk] = (serial, canonical(serial))
    if not changes:
        return
    wanted = Counter(new for _, new in changes.values())
    taken = set(
        Terminal.objects.filter(serial_number__in=wanted).values_list(
            "serial_number", flat=True
        )
    )
    clashes = sorted(
        {old for old, new in changes.values() if new in taken or wanted[new] > 1}
    )
    if clashes:
        raise RuntimeError(
            "These terminal serial numbers differ from others only by dashes, "
            "spaces or case; merge or correct them first: " + ", ".join(clashes)
        )
    for pk, (_, new) in changes.items():
        Terminal.objects.filter(pk=pk).update(serial_number=new)


class Migration(migrations.Migration):
    dependencies = [("terminals", "0002_merchant_name_prefix_index")]

    operations = [
        migrations.RunPython(canonicalise_serial_numbers, migrations.RunPython.noop),
    ]
