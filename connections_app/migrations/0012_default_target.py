from django.conf import settings
from django.db import migrations


def default_target(apps, schema_editor):
    """Every connection and change so far belongs to the app's own account and Region."""
    Target = apps.get_model("connections_app", "Target")
    target, _ = Target.objects.get_or_create(
        is_default=True, defaults={"name": "default", "region": settings.AWS_REGION}
    )
    for name in ("Connection", "ConnectionRequest"):
        apps.get_model("connections_app", name).objects.filter(target=None).update(target=target)


class Migration(migrations.Migration):
    dependencies = [("connections_app", "0011_fleet_targets")]

    operations = [migrations.RunPython(default_target, migrations.RunPython.noop)]
