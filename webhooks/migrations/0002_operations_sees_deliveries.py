"""Let Operations see webhook deliveries and resend them; Auditors read them."""

from django.contrib.auth.management import create_permissions
from django.db import migrations

GRANTS = {
    "Operations": ["view_subscription", "view_delivery", "change_delivery"],
    "Auditor": ["view_subscription", "view_delivery"],
}


def grant(apps, schema_editor):
    app_config = apps.get_app_config("webhooks")
    app_config.models_module = True
    create_permissions(app_config, apps=apps, verbosity=0)
    app_config.models_module = None
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    for name, codenames in GRANTS.items():
        group, _ = Group.objects.get_or_create(name=name)
        group.permissions.add(
            *Permission.objects.filter(
                content_type__app_label="webhooks", codename__in=codenames
            )
        )


class Migration(migrations.Migration):
    dependencies = [
        ("webhooks", "0001_initial"),
        ("cases", "0002_staff_groups"),
    ]

    operations = [migrations.RunPython(grant, migrations.RunPython.noop)]
