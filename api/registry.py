"""Registry sync from the provider's core: what was done here is never undone.

The body is the registry file of CONTRACT.md plus as-of times: ``as_of`` for
the whole body and, optionally, ``as_of`` on each terminal record (the record's
own wins). A terminal record older than the terminal's last local binding
change (an unbinding or rebinding done here, or a newer sync) that would
change its binding is not applied: it is listed as a conflict for staff
(``RegistryConflict``) and the rest is imported by
``terminals.importer.registry_import``, with its validation and all-or-nothing
rule.
"""

from dataclasses import dataclass, field
from datetime import datetime

from django.db import transaction
from django.db.models import Max
from django.db.models.functions import Coalesce, Greatest
from django.utils.dateparse import parse_datetime
from django.utils.translation import gettext as _

from api.models import RegistryConflict
from terminals.importer import (
    ImportResult,
    RegistryImportError,
    normalise_serial_number,
    registry_import,
)
from terminals.models import Binding


@dataclass
class SyncResult:
    imported: ImportResult
    conflicts: list[RegistryConflict] = field(default_factory=list)


def _as_of(value, *, where: str) -> datetime:
    parsed = parse_datetime(value) if isinstance(value, str) else None
    if parsed is None or parsed.tzinfo is None:
        raise RegistryImportError(
            _("as_of must be an ISO 8601 date and time with a UTC offset"),
            section=where if where != "file" else None,
        )
    return parsed


def _local_changes(serials: list[str]) -> dict[str, tuple[datetime, str | None]]:
    """Return serial → (last binding change, merchant bound now or None)."""
    if not serials:
        return {}
    changes = dict(
        Binding.objects.filter(terminal__serial_number__in=serials)
        .values("terminal__serial_number")
        .annotate(
            changed=Max(Greatest("started_at", Coalesce("ended_at", "started_at")))
        )
        .values_list("terminal__serial_number", "changed")
    )
    bound = dict(
        Binding.objects.active()
        .filter(terminal__serial_number__in=serials)
        .values_list("terminal__serial_number", "merchant__merchant_id")
    )
    return {serial: (changed, bound.get(serial)) for serial, changed in changes.items()}


def registry_sync(*, data: dict, sent_by: str) -> SyncResult:
    """Apply a registry sync body; raise ``RegistryImportError`` when it is wrong."""
    if not isinstance(data, dict):
        raise RegistryImportError(_("the body must be a JSON object"))
    data = dict(data)
    file_as_of = data.pop("as_of", None)
    file_as_of = _as_of(file_as_of, where="file") if file_as_of is not None else None
    terminals = data.get("terminals") or []
    if not isinstance(terminals, list):
        raise RegistryImportError(_("must be a list"), section="terminals")

    records: list[tuple[int, dict, datetime]] = []
    for index, record in enumerate(terminals):
        if not isinstance(record, dict):
            raise RegistryImportError(
                _("a record must be a JSON object"), section="terminals", index=index
            )
        record = dict(record)
        own = record.pop("as_of", None)
        if own is not None:
            as_of = _as_of(own, where="terminals")
        elif file_as_of is not None:
            as_of = file_as_of
        else:
            raise RegistryImportError(
                _("as_of is required, for the body or for the record"),
                section="terminals",
                index=index,
                field="as_of",
            )
        records.append((index, record, as_of))

    local = _local_changes(
        [
            normalise_serial_number(str(r.get("serial_number", "")))
            for _i, r, _a in records
        ]
    )
    kept: list[dict] = []
    kept_index: list[int] = []
    stale: list[RegistryConflict] = []
    for index, record, as_of in records:
        serial = normalise_serial_number(str(record.get("serial_number", "")))
        changed_at, bound_to = local.get(serial, (None, None))
        wanted = record.get("merchant_id") or None
        if changed_at is not None and changed_at > as_of and wanted != bound_to:
            stale.append(
                RegistryConflict(
                    kind=RegistryConflict.Kind.BINDING,
                    serial_number=serial,
                    merchant_id=str(wanted or ""),
                    record_as_of=as_of,
                    local_changed_at=changed_at,
                    detail=_(
                        "The record says %(wanted)s but the terminal is %(local)s "
                        "since a newer change here; not applied."
                    )
                    % {
                        "wanted": _("bound to %(m)s") % {"m": wanted}
                        if wanted
                        else _("in stock"),
                        "local": _("bound to %(m)s") % {"m": bound_to}
                        if bound_to
                        else _("not bound"),
                    },
                    api_key_name=sent_by,
                )
            )
            continue
        kept.append(record)
        kept_index.append(index)
    data["terminals"] = kept

    with transaction.atomic():
        try:
            imported = registry_import(data=data)
        except RegistryImportError as error:
            if error.section == "terminals" and error.index is not None:
                # Name the record by its place in the body, not in the kept list.
                error.index = kept_index[error.index]
            raise
        conflicts = RegistryConflict.objects.bulk_create(stale)
    return SyncResult(imported=imported, conflicts=conflicts)
