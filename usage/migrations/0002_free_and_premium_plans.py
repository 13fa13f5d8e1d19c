"""The two plans Parley starts with (staff edit or add plans in the admin):

- free, the default: 30 text, 5 audio and 5 media messages a day with each character;
- premium: 1000 text, 100 audio and 100 media messages a day with each character.
"""

from django.db import migrations

PLANS = [
    {
        "slug": "free",
        "name": "Free",
        "price_label": "Free",
        "description": "Chat with every character, every day.",
        "is_default": True,
        "ordering": 0,
        "limits": {"text": 30, "audio": 5, "media": 5},
    },
    {
        "slug": "premium",
        "name": "Premium",
        "price_label": "Ask us",
        "description": "For people who talk a lot: far more messages, voice notes and pictures.",
        "is_default": False,
        "ordering": 10,
        "limits": {"text": 1000, "audio": 100, "media": 100},
    },
]


def create_plans(apps, schema_editor):
    Plan = apps.get_model("usage", "Plan")
    PlanLimit = apps.get_model("usage", "PlanLimit")
    for spec in PLANS:
        fields = {k: v for k, v in spec.items() if k not in ("slug", "limits")}
        plan, created = Plan.objects.get_or_create(slug=spec["slug"], defaults=fields)
        if not created:
            continue  # staff already made it: theirs stands
        PlanLimit.objects.bulk_create(
            [
                PlanLimit(plan=plan, kind=kind, period="day", limit=limit)
                for kind, limit in spec["limits"].items()
            ]
        )


def delete_plans(apps, schema_editor):
    Plan = apps.get_model("usage", "Plan")
    Plan.objects.filter(slug__in=[spec["slug"] for spec in PLANS], grants__isnull=True).delete()


class Migration(migrations.Migration):
    dependencies = [("usage", "0001_plans_limits_counters")]

    operations = [migrations.RunPython(create_plans, delete_plans)]
