"""Staff roles: Django groups with the exact names of the public contract."""

from django.utils.translation import gettext_lazy as _

REVIEWER = "Reviewer"
APPROVER = "Approver"
OPERATIONS = "Operations"
AUDITOR = "Auditor"

ALL = (REVIEWER, APPROVER, OPERATIONS, AUDITOR)

DESCRIPTIONS = {
    REVIEWER: _(
        "Checks documents, asks merchants for information, recommends or rejects."
    ),
    APPROVER: _("Confirms recommended cases; never the reviewer who recommended them."),
    OPERATIONS: _("Handles failed executions and retries them."),
    AUDITOR: _("Reads everything, changes nothing."),
}


def user_in_group(user, name: str) -> bool:
    """Tell whether ``user`` is an active member of the group ``name``."""
    if user is None or not getattr(user, "is_active", False):
        return False
    if user.is_superuser:
        return True
    cache = getattr(user, "_group_names_cache", None)
    if cache is None:
        cache = set(user.groups.values_list("name", flat=True))
        user._group_names_cache = cache
    return name in cache
