"""Creating and revoking API keys."""

from datetime import datetime

from django.db import transaction

from api.auth import api_keys_forget
from api.models import APIKey, Scope


@transaction.atomic
def api_key_create(
    *,
    name: str,
    scopes: list[str] | None = None,
    staff_user=None,
    expiry_date: datetime | None = None,
) -> tuple[APIKey, str]:
    """Create a key for one calling system; return it with the key itself.

    The key is returned once and never stored: only its hash is kept.
    Without ``scopes`` the key may read and file cases.
    """
    if scopes is None:
        scopes = [Scope.READ_CASES, Scope.FILE_CASES]
    unknown = set(scopes) - set(Scope.values)
    if unknown:
        raise ValueError(f"unknown scopes: {', '.join(sorted(unknown))}")
    return APIKey.objects.create_key(
        name=name,
        scopes=[str(s) for s in scopes],
        staff_user=staff_user,
        expiry_date=expiry_date,
    )


def api_key_revoke(*, api_key_id: str) -> None:
    """Revoke a key for good: calls with it are refused from now on."""
    APIKey.objects.filter(pk=api_key_id).update(revoked=True)
    api_keys_forget()
