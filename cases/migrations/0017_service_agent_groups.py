"""Create the staff groups Service (phone-in and branch filing) and Agent (代理商)."""

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
]

# Everyone who reads the audit trail also reads the merchant sign-ins and
# which merchants each agent collects for.
SIGN_IN_READERS = ("Reviewer", "Approver", "Operations", "Auditor", "Service")

GROUPS = {
    # Files cases for merchants in the admin; sees cases and the registry.
    "Service": VIEW_ALL,
    # Files cases for its own merchants only: no model permission at all, the
    # filing screen checks the agent's merchants (cases.AgentMerchant).
    "Agent": [],
}


def create_groups(apps, schema_editor):
    for app_config in apps.get_app_configs():
        app_config.models_module = True
        create_permissions(app_config, apps=apps, verbosity=0)
        app_config.models_module = None

    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    for name, codenames in GROUPS.items():
        group, _ = Group.objects.get_or_create(name=name)
        group.permissions.set(
            [
                Permission.objects.get(content_type__app_label=app, codename=codename)
                for app, codename in codenames
            ]
        )
    readable = Permission.objects.filter(
        content_type__app_label="cases",
        codename__in=("view_merchantsignin", "view_agentmerchant"),
    )
    for group in Group.objects.filter(name__in=SIGN_IN_READERS):
        group.permissions.add(*readable)


def remove_groups(apps, schema_editor):
    apps.get_model("auth", "Group").objects.filter(name__in=GROUPS).delete()


class Migration(migrations.Migration):
    dependencies = [("cases", "0016_merchant_sign_in_agents_channel")]

    operations = [migrations.RunPython(create_groups, remove_groups)]
