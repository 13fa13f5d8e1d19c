from django.db import migrations, models


def create_row(apps, schema_editor):
    apps.get_model("usage", "PlanBookVersion").objects.create(pk=1, version=0)


class Migration(migrations.Migration):
    dependencies = [("usage", "0002_free_and_premium_plans")]

    operations = [
        migrations.CreateModel(
            name="PlanBookVersion",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("version", models.BigIntegerField(default=0)),
            ],
        ),
        migrations.RunPython(create_row, migrations.RunPython.noop),
    ]
