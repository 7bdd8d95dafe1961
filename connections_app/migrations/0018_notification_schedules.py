from django.db import migrations

SCHEDULES = [
    # (name, function, schedule type, minutes)
    ("Send notifications", "connections_app.tasks.send_notifications", "I", 1),
    ("Remind approvers of changes waiting over a day", "connections_app.tasks.remind", "D", None),
    ("Last call for changes about to expire", "connections_app.tasks.last_calls", "H", None),
]


def schedules(apps, schema_editor):
    Schedule = apps.get_model("django_q", "Schedule")
    for name, func, kind, minutes in SCHEDULES:
        Schedule.objects.get_or_create(
            name=name,
            defaults={"func": func, "schedule_type": kind, "minutes": minutes, "repeats": -1},
        )


def no_schedules(apps, schema_editor):
    apps.get_model("django_q", "Schedule").objects.filter(
        name__in=[name for name, *_ in SCHEDULES]
    ).delete()


class Migration(migrations.Migration):
    dependencies = [("connections_app", "0017_notifications")]

    operations = [migrations.RunPython(schedules, no_schedules)]
