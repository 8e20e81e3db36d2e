"""Let Operations work on device returns; every staff group sees them."""

from django.contrib.auth.management import create_permissions
from django.db import migrations

GRANTS = {
    "Reviewer": ["view_devicereturn"],
    "Approver": ["view_devicereturn"],
    "Operations": ["view_devicereturn", "change_devicereturn"],
    "Auditor": ["view_devicereturn"],
}


def grant(apps, schema_editor):
    for app_config in apps.get_app_configs():
        app_config.models_module = True
        create_permissions(app_config, apps=apps, verbosity=0)
        app_config.models_module = None
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    for name, codenames in GRANTS.items():
        group, _ = Group.objects.get_or_create(name=name)
        group.permissions.add(
            *Permission.objects.filter(
                content_type__app_label="cases", codename__in=codenames
            )
        )


def revoke(apps, schema_editor):
    Permission = apps.get_model("auth", "Permission")
    Group = apps.get_model("auth", "Group")
    for name, codenames in GRANTS.items():
        for group in Group.objects.filter(name=name):
            group.permissions.remove(
                *Permission.objects.filter(
                    content_type__app_label="cases", codename__in=codenames
                )
            )


class Migration(migrations.Migration):
    dependencies = [("cases", "0011_device_return")]

    operations = [migrations.RunPython(grant, revoke)]
