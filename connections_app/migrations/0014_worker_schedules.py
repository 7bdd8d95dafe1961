from django.conf import settings
from django.db import migrations

SCHEDULES = [
    # (name, function, every so many minutes)
    ("Sweep every target", "connections_app.tasks.sweep_all", settings.SWEEP_MINUTES),
    ("Follow connections in a passing state", "connections_app.tasks.follow_states", 1),
    ("Expire requests past their time", "connections_app.tasks.expire", 5),
    ("Sign a due audit checkpoint", "connections_app.tasks.checkpoint", 5),
]


def schedules(apps, schema_editor):
    """The worker's schedules, visible and editable in the admin (Django Q, Scheduled tasks)."""
    Schedule = apps.get_model("django_q", "Schedule")
    for name, func, minutes in SCHEDULES:
        Schedule.objects.get_or_create(
            name=name,
            defaults={"func": func, "schedule_type": "I", "minutes": minutes, "repeats": -1},
        )


def no_schedules(apps, schema_editor):
    apps.get_model("django_q", "Schedule").objects.filter(
        name__in=[name for name, _, _ in SCHEDULES]
    ).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("connections_app", "0013_targets_required"),
        ("django_q", "0019_alter_task_options_alter_ormq_key_alter_ormq_lock_and_more"),
    ]

    operations = [migrations.RunPython(schedules, no_schedules)]
