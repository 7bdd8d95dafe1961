"""What an attacker who controls the database (but not Vault) does to the audit log: plain SQL
behind the app's back, the append-only triggers switched off as the tables' owner can."""

from django.db import connection

from connections_app import audit
from connections_app.models import AuditChainHead, AuditCheckpoint, AuditEvent, AuditSecretUse
from tests import rawsql

EVENTS = AuditEvent._meta.db_table
CHECKPOINTS = AuditCheckpoint._meta.db_table
HEAD = AuditChainHead._meta.db_table
AUDIT_TABLES = (EVENTS, AuditSecretUse._meta.db_table, CHECKPOINTS, HEAD)


def disable_triggers() -> None:
    if connection.vendor == "postgresql":
        for table in (EVENTS, CHECKPOINTS):
            rawsql.execute(f"ALTER TABLE {table} DISABLE TRIGGER USER")


def rewrite(seq: int, **changes) -> None:
    """Change event `seq`'s columns, then recompute its hash, every later hash and link, the
    head, and the database's checkpoints: every check inside the database passes again."""
    disable_triggers()
    events = list(AuditEvent.objects.order_by("id"))
    prev = audit.GENESIS
    for event in events:
        fields = {column: getattr(event, column) for column in audit.COLUMNS[:11]}
        updates = dict(changes) if event.id == seq else {}
        fields.update(updates)
        digest = audit._hash(prev, audit.header_of(fields), fields["data"])
        updates.update(prev_hash=prev, hash=digest)
        assignments = ", ".join(f"{column} = %s" for column in updates)
        rawsql.execute(
            f"UPDATE {EVENTS} SET {assignments} WHERE id = %s", [*updates.values(), event.id]
        )
        rawsql.execute(f"UPDATE {CHECKPOINTS} SET hash = %s WHERE seq = %s", [digest, event.id])
        prev = digest
    rawsql.execute(f"UPDATE {HEAD} SET last_hash = %s WHERE id = 1", [prev])


def cut_tail(keep: int) -> None:
    """Delete the events after `keep` and the checkpoints past it; rewind the head to `keep`."""
    disable_triggers()
    kept = AuditEvent.objects.get(id=keep)
    rawsql.execute(f"DELETE FROM {EVENTS} WHERE id > %s", [keep])
    rawsql.execute(f"DELETE FROM {CHECKPOINTS} WHERE seq > %s", [keep])
    rawsql.execute(f"DELETE FROM {AuditSecretUse._meta.db_table} WHERE event_id > %s", [keep])
    audit.advance_head(keep, kept.hash)


def truncate() -> None:
    """Empty every audit table (TRUNCATE on PostgreSQL, where the owner may)."""
    if connection.vendor == "postgresql":
        rawsql.execute(f"TRUNCATE {', '.join(AUDIT_TABLES)}")
    else:
        for table in AUDIT_TABLES:
            rawsql.execute(f"DELETE FROM {table}")
