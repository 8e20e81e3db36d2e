from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("cases", "0005_field_verbose_names"),
    ]

    operations = [
        migrations.AddIndex(
            model_name="case",
            index=models.Index(
                condition=models.Q(
                    ("state__in", ["submitted", "in_review", "awaiting_approval"])
                ),
                fields=["review_due_at", "id"],
                name="case_waiting_due",
            ),
        ),
    ]
