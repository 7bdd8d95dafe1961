# Audit review (issue 5): checkpoints of verified chain positions, and an index of the secret
# fingerprints in events (backfilled here). Other migrations build on this one.
import json

import django.db.models.deletion
from django.db import migrations, models

# The checkpoints are append-only like the events (the function comes from 0002).
TRIGGER = """
CREATE TRIGGER connections_app_auditcheckpoint_append_only
    BEFORE UPDATE OR DELETE ON connections_app_auditcheckpoint
    FOR EACH ROW EXECUTE FUNCTION connections_app_audit_append_only();
"""
DROP = (
    "DROP TRIGGER IF EXISTS connections_app_auditcheckpoint_append_only"
    " ON connections_app_auditcheckpoint;"
)


def trigger(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(TRIGGER, params=None)


def drop_trigger(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(DROP, params=None)


def _fingerprinted(node, path=""):
    """(path, leaf) of each fingerprinted secret leaf (audit.secret_uses, frozen here)."""
    if isinstance(node, dict) and "vault" in node:
        if node.get("fingerprint"):
            yield path, node
    elif isinstance(node, dict):
        for key in sorted(node):
            yield from _fingerprinted(node[key], f"{path}.{key}" if path else key)
    elif isinstance(node, list):
        for i, item in enumerate(node):
            yield from _fingerprinted(item, f"{path}[{i}]")


def backfill(apps, schema_editor):
    """Index the fingerprints of events written before this migration."""
    event_model = apps.get_model("connections_app", "AuditEvent")
    use_model = apps.get_model("connections_app", "AuditSecretUse")
    events = event_model.objects.filter(data__contains="hmac-sha256:").values_list("id", "data")
    batch = []
    for event_id, data in events.iterator(chunk_size=2000):
        document = json.loads(data).get("document") or {}
        batch += [
            use_model(
                event_id=event_id,
                path=path,
                reference=leaf["vault"],
                version=leaf.get("version"),
                fingerprint=leaf["fingerprint"],
            )
            for path, leaf in _fingerprinted(document)
        ]
        if len(batch) >= 2000:
            use_model.objects.bulk_create(batch)
            batch = []
    use_model.objects.bulk_create(batch)


class Migration(migrations.Migration):
    dependencies = [("connections_app", "0002_audit_append_only_trigger")]

    operations = [
        migrations.CreateModel(
            name="AuditCheckpoint",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("seq", models.BigIntegerField(unique=True)),
                ("hash", models.CharField(max_length=64)),
                ("created_at", models.DateTimeField(auto_now_add=True)),
            ],
            options={"ordering": ["-seq"]},
        ),
        migrations.CreateModel(
            name="AuditSecretUse",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("path", models.CharField(max_length=300)),
                ("reference", models.CharField(max_length=1024)),
                ("version", models.IntegerField(blank=True, null=True)),
                ("fingerprint", models.CharField(max_length=80)),
                (
                    "event",
                    models.ForeignKey(
                        db_constraint=False,
                        db_index=False,
                        on_delete=django.db.models.deletion.DO_NOTHING,
                        related_name="secret_uses",
                        to="connections_app.auditevent",
                    ),
                ),
            ],
            options={
                "ordering": ["-event_id"],
                "indexes": [
                    models.Index(
                        fields=["fingerprint", "event"], name="connections_fingerp_d82407_idx"
                    ),
                    models.Index(
                        fields=["reference", "event"], name="connections_referen_f1b982_idx"
                    ),
                ],
            },
        ),
        migrations.RunPython(trigger, drop_trigger),
        migrations.RunPython(backfill, migrations.RunPython.noop),
    ]
