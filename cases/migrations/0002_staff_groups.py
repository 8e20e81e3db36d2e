"""Create the staff groups of the contract with their permissions."""

from django.contrib.auth.management import create_permissions
from django.db import migrations

VIEW_ALL = [
    ("cases", "view_case"),
    ("cases", "view_caseterminal"),
    ("cases", "view_document"),
    ("cases", "view_caseevent"),
    ("cases", "view_notification"),
    ("cases", "view_executionstep"),
    ("terminals", "view_merchant"),
    ("terminals", "view_terminal"),
    ("terminals", "view_binding"),
    ("terminals", "view_transaction"),
    ("terminals", "view_settlementbatch"),
]

GROUPS = {
    "Reviewer": VIEW_ALL + [("cases", "review_case"), ("cases", "change_document")],
    "Approver": VIEW_ALL
    + [("cases", "review_case"), ("cases", "approve_case"), ("cases", "change_document")],
    "Operations": VIEW_ALL + [("cases", "retry_case"), ("cases", "change_notification")],
    "Auditor": VIEW_ALL,
}


def create_groups(apps, schema_editor):
    # Permissions are normally created after migrate; make sure they exist now.
    for app_config in apps.get_app_configs():
        app_config.models_module = True
        create_permissions(app_config, apps=apps, verbosity=0)
        app_config.models_module = None

    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    for name, codenames in GROUPS.items():
        group, _ = Group.objects.get_or_create(name=name)
        perms = [
            Permission.objects.get(content_type__app_label=app, codename=codename)
            for app, codename in codenames
        ]
        group.permissions.set(perms)


def remove_groups(apps, schema_editor):
    apps.get_model("auth", "Group").objects.filter(name__in=GROUPS).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("cases", "0001_initial"),
        ("terminals", "0001_initial"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [migrations.RunPython(create_groups, remove_groups)]
