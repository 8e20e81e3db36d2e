"""Create the Finance staff group: it reads cases and pays their finance items."""

from django.contrib.auth.management import create_permissions
from django.db import migrations

PERMISSIONS = [
    ("cases", "view_case"),
    ("cases", "view_caseterminal"),
    ("cases", "view_caseevent"),
    ("cases", "view_casestatement"),
    ("cases", "view_financeitem"),
    ("cases", "change_financeitem"),
    ("cases", "pay_financeitem"),
    ("terminals", "view_merchant"),
    ("terminals", "view_terminal"),
    ("terminals", "view_settlementbatch"),
]


def create_group(apps, schema_editor):
    for app_config in apps.get_app_configs():
        app_config.models_module = True
        create_permissions(app_config, apps=apps, verbosity=0)
        app_config.models_module = None
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    group, _ = Group.objects.get_or_create(name="Finance")
    group.permissions.set(
        [
            Permission.objects.get(content_type__app_label=app, codename=codename)
            for app, codename in PERMISSIONS
        ]
    )
    # Auditors read the finance items and the frozen statements too.
    auditor = Group.objects.filter(name="Auditor").first()
    if auditor is not None:
        auditor.permissions.add(
            *Permission.objects.filter(
                content_type__app_label="cases",
                codename__in=["view_casestatement", "view_financeitem"],
            )
        )


def remove_group(apps, schema_editor):
    apps.get_model("auth", "Group").objects.filter(name="Finance").delete()


class Migration(migrations.Migration):
    dependencies = [("cases", "0019_statement_finance_items")]

    operations = [migrations.RunPython(create_group, remove_group)]
