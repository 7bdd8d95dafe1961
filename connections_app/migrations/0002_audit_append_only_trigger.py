"""On PostgreSQL the database itself refuses UPDATE and DELETE on audit events.

TRUNCATE is left to the table owner (the test runner empties tables with it); the hash chain's
head row still lets verify_audit_chain notice a truncated log.
"""

from django.db import migrations

CREATE = """
CREATE OR REPLACE FUNCTION connections_app_audit_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'audit events are append-only (% refused)', TG_OP;
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER connections_app_auditevent_append_only
    BEFORE UPDATE OR DELETE ON connections_app_auditevent
    FOR EACH ROW EXECUTE FUNCTION connections_app_audit_append_only();
"""
DROP = """
DROP TRIGGER IF EXISTS connections_app_auditevent_append_only ON connections_app_auditevent;
DROP FUNCTION IF EXISTS connections_app_audit_append_only();
"""


def forwards(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(CREATE, params=None)


def backwards(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(DROP, params=None)


class Migration(migrations.Migration):
    dependencies = [("connections_app", "0001_initial")]
    operations = [migrations.RunPython(forwards, backwards)]
