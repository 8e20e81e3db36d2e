"""Staff roles: Django groups with the exact names of the public contract."""

REVIEWER = "Reviewer"
APPROVER = "Approver"
OPERATIONS = "Operations"
AUDITOR = "Auditor"
# Files cases for merchants who phone in or come to a branch (cases/admin/filing.py).
SERVICE = "Service"
# An agent (代理商) files cases for its own merchants only; never reviews or approves.
AGENT = "Agent"
# Not in the public contract: pays the finance items of completed cases.
FINANCE = "Finance"

ALL = (REVIEWER, APPROVER, OPERATIONS, AUDITOR)


def user_in_group(user, name: str) -> bool:
    """Tell whether ``user`` is an active member of the group ``name``."""
    if user is None or not getattr(user, "is_active", False):
        return False
    if user.is_superuser:
        return True
    cache = getattr(user, "_group_names_cache", None)
    if cache is None:
        # With the permissions, in one query (config/permissions.py).
        from config.permissions import load_auth

        load_auth(user)
        cache = user._group_names_cache
    return name in cache


def is_auditor(user) -> bool:
    """Tell whether ``user`` is a member of the read-only Auditor group.

    The one rule every writer follows (services and admin alike): an auditor
    changes nothing, whatever other groups they are in. Checked on real
    membership: ``user_in_group`` treats superusers as members of every
    group, which would make every superuser read-only.
    """
    if user is None or user.is_superuser:
        return False
    return user_in_group(user, AUDITOR)


def is_case_staff(user) -> bool:
    """Tell whether ``user`` may work on cases (Reviewer or Approver, not Auditor, not Agent)."""
    return (
        not is_auditor(user)
        and not is_agent(user)
        and (user_in_group(user, REVIEWER) or user_in_group(user, APPROVER))
    )


def is_agent(user) -> bool:
    """Tell whether ``user`` is a member of the Agent group (real membership).

    An agent is refused every staff action on a case, whatever other groups
    it is in (the outsourcing rule of docs/review.md). Superusers are not
    agents.
    """
    if user is None or user.is_superuser:
        return False
    return user_in_group(user, AGENT)


def may_file_for_merchants(user) -> bool:
    """Tell whether ``user`` may file a case for a merchant in the admin."""
    return not is_auditor(user) and (
        user_in_group(user, SERVICE) or user_in_group(user, AGENT)
    )
