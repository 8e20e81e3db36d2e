"""A staff user's groups and permissions, read in one query per request.

Django's ``ModelBackend`` reads a user's own permissions and their groups'
permissions in two queries, and ``cases.roles.user_in_group`` the user's
group names in a third, on every admin page (each on a new user object, so
each once per request). ``load_auth(user)`` reads all three in one
statement and fills the caches both keep on the user object — the same
caches, the same lifetime (the request's user object), so a change of
groups or permissions counts from the next request, as before.
"""

from django.db import connections, router


def load_auth(user) -> None:
    """Fill ``user``'s group-name and permission caches in one query.

    For an active, non-superuser user (the others keep Django's own paths):
    ``_group_names_cache`` (``cases.roles``), ``_user_perm_cache``,
    ``_group_perm_cache`` and ``_perm_cache`` (``ModelBackend``).
    """
    if getattr(user, "_group_names_cache", None) is not None and hasattr(
        user, "_perm_cache"
    ):
        return
    # Imported here: cases.roles imports this module while the models load.
    from django.contrib.auth.models import Group, Permission
    from django.contrib.contenttypes.models import ContentType

    user_model = user._meta.model  # request.user is a lazy object
    db = router.db_for_read(Permission)
    connection = connections[db]
    q = connection.ops.quote_name
    perm = q(Permission._meta.db_table)
    ctype = q(ContentType._meta.db_table)
    group = q(Group._meta.db_table)
    user_perms = q(user_model.user_permissions.through._meta.db_table)
    user_groups = q(user_model.groups.through._meta.db_table)
    group_perms = q(Group.permissions.through._meta.db_table)
    sql = (
        f"SELECT 'u', ct.app_label, p.codename FROM {perm} p "
        f"JOIN {ctype} ct ON ct.id = p.content_type_id "
        f"JOIN {user_perms} up ON up.permission_id = p.id WHERE up.user_id = %s "
        "UNION ALL "
        f"SELECT 'g', ct.app_label, p.codename FROM {perm} p "
        f"JOIN {ctype} ct ON ct.id = p.content_type_id "
        f"JOIN {group_perms} gp ON gp.permission_id = p.id "
        f"JOIN {user_groups} ug ON ug.group_id = gp.group_id WHERE ug.user_id = %s "
        "UNION ALL "
        f"SELECT 'n', g.name, '' FROM {group} g "
        f"JOIN {user_groups} ug ON ug.group_id = g.id WHERE ug.user_id = %s"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [user.pk, user.pk, user.pk])
        rows = cursor.fetchall()
    own = {f"{app}.{code}" for kind, app, code in rows if kind == "u"}
    grouped = {f"{app}.{code}" for kind, app, code in rows if kind == "g"}
    user._group_names_cache = {app for kind, app, _code in rows if kind == "n"}
    user._user_perm_cache = own
    user._group_perm_cache = grouped
    user._perm_cache = own | grouped


def loads_in_one_query(user) -> bool:
    """Tell whether ``load_auth`` applies to ``user`` (active, saved, not superuser)."""
    return bool(
        getattr(user, "is_active", False)
        and not getattr(user, "is_anonymous", True)
        and not getattr(user, "is_superuser", False)
        and getattr(user, "pk", None) is not None
    )


class OneQueryPermissionBackend:
    """Answers permission checks from ``load_auth``'s one query; never authenticates.

    Listed before ``ModelBackend`` (settings.AUTHENTICATION_BACKENDS): it
    fills the caches ``ModelBackend`` reads (same names, same contents), so
    ``ModelBackend`` then answers from them without a query of its own. It
    logs nobody in (``authenticate`` answers ``None``) and has no
    ``get_user``, so that ``force_login`` and sessions keep naming
    ``ModelBackend``.
    """

    def authenticate(self, request, **credentials):
        return None

    def has_perm(self, user_obj, perm, obj=None) -> bool:
        return perm in self.get_all_permissions(user_obj, obj)

    def has_module_perms(self, user_obj, app_label) -> bool:
        return any(
            perm.partition(".")[0] == app_label
            for perm in self.get_all_permissions(user_obj)
        )

    def get_user_permissions(self, user_obj, obj=None):
        if obj is not None or not loads_in_one_query(user_obj):
            return set()
        load_auth(user_obj)
        return user_obj._user_perm_cache

    def get_group_permissions(self, user_obj, obj=None):
        if obj is not None or not loads_in_one_query(user_obj):
            return set()
        load_auth(user_obj)
        return user_obj._group_perm_cache

    def get_all_permissions(self, user_obj, obj=None):
        if obj is not None or not loads_in_one_query(user_obj):
            return set()
        load_auth(user_obj)
        return user_obj._perm_cache
