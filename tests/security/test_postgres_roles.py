"""Least-privilege PostgreSQL roles (manage.py postgres_roles), set up in the test database:
the app's role appends to the audit log but cannot update, delete or truncate it, while the
rest of the schema, later migrations' tables included, works as usual."""

from __future__ import annotations

import io
import uuid

import pytest
from django.core.management import call_command
from django.db import DatabaseError, connection, connections, transaction

from connections_app import audit
from connections_app.models import (
    AuditChainHead,
    AuditCheckpoint,
    AuditEvent,
    AuditSecretUse,
    ConnectionRequest,
)
from tests import rawsql

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.skipif(
        connection.vendor != "postgresql",
        reason="database roles and privileges are PostgreSQL's; run with DATABASE_URL=postgres://…",
    ),
    pytest.mark.django_db(transaction=True),
]
APPEND_ONLY = [m._meta.db_table for m in (AuditEvent, AuditSecretUse, AuditCheckpoint)]
HEAD = AuditChainHead._meta.db_table


@pytest.fixture
def roles():
    """An owner and an app role made by the printed script; dropped again afterwards."""
    suffix = uuid.uuid4().hex[:8]
    owner, app = f"eb_owner_{suffix}", f"eb_app_{suffix}"
    script = io.StringIO()
    call_command("postgres_roles", "--owner", owner, "--app", app, stdout=script)
    rawsql.execute(script.getvalue())
    rawsql.execute(script.getvalue())  # again, as after a later migrate: idempotent
    yield owner, app
    # Their grants, default privileges and the owner's table; one role at a time (PostgreSQL
    # fails on a default ACL of one naming the other when both are given at once).
    for role in (app, owner):
        rawsql.execute(f'DROP OWNED BY "{role}"')
    rawsql.execute(f'DROP ROLE "{owner}", "{app}"')


@pytest.fixture
def as_app(roles):
    """Django's default connection logged in as the app role (a real login, no password:
    the test server trusts loopback), for the app's own code and plain SQL alike."""
    own = connections["default"]
    login = own.__class__({**own.settings_dict, "USER": roles[1], "PASSWORD": ""}, "default")
    connections["default"] = login
    try:
        yield login
    finally:
        login.close()
        connections["default"] = own


def _refusal(sql: str) -> str:
    """'refused' with PostgreSQL's reason, or 'ALLOWED'."""
    try:
        with transaction.atomic():
            rawsql.execute(sql)
    except DatabaseError as exc:
        return f"refused ({str(exc).splitlines()[0]})"
    return "ALLOWED"


def test_the_app_role_appends_but_cannot_rewrite_the_audit_log(roles, as_app, security_report):
    owner, app = roles
    assert rawsql.execute("SELECT current_user") == [(app,)]
    with transaction.atomic():  # the app's own append: insert events, move the head
        audit.append([{"action": "test.step"} for _ in range(3)])
    assert audit.verify_chain().ok and audit.verify_chain().checked == 3
    audit.checkpoint_record(audit.verify_chain())  # the database copy of a signed checkpoint

    attempts = {}
    for table in APPEND_ONLY:
        attempts[f"UPDATE {table}"] = f"UPDATE {table} SET id = id"
        attempts[f"DELETE FROM {table}"] = f"DELETE FROM {table}"
        attempts[f"TRUNCATE {table}"] = f"TRUNCATE {table}"
    attempts[f"DELETE FROM {HEAD}"] = f"DELETE FROM {HEAD}"
    attempts[f"TRUNCATE {HEAD}"] = f"TRUNCATE {HEAD}"
    attempts["disable the append-only trigger"] = (
        f"ALTER TABLE {APPEND_ONLY[0]} DISABLE TRIGGER USER"
    )
    outcomes = {what: _refusal(sql) for what, sql in attempts.items()}
    security_report.add(
        "audit tampering",
        "as the app's PostgreSQL role (postgres_roles): UPDATE, DELETE, TRUNCATE on the audit "
        "tables, DELETE/TRUNCATE on the head, disabling the trigger",
        f"{sum(o.startswith('refused') for o in outcomes.values())} of {len(outcomes)} refused "
        f"(e.g. “{outcomes[f'TRUNCATE {APPEND_ONLY[0]}']}”); appending 3 events as that role: "
        "works",
    )
    assert [what for what, outcome in outcomes.items() if outcome == "ALLOWED"] == []
    assert all("permission denied" in o or "must be owner" in o for o in outcomes.values())
    assert audit.verify_chain().checked == 3


def test_the_app_role_uses_other_tables_and_later_migrations_tables(roles, as_app):
    owner, app = roles
    requests = ConnectionRequest._meta.db_table
    for sql in (
        f"SELECT count(*) FROM {requests}",
        f"UPDATE {requests} SET name = name WHERE false",
        f"DELETE FROM {requests} WHERE false",
    ):
        assert _refusal(sql) == "ALLOWED", sql
    assert _refusal(f"TRUNCATE {requests}").startswith("refused")  # only the owner may
    # A table a later migration makes (as the owner): the default privileges cover it.
    table = f"later_{uuid.uuid4().hex[:8]}"
    migrator = as_app.__class__({**as_app.settings_dict, "USER": owner}, "owner")
    try:
        with migrator.cursor() as cursor:
            cursor.execute(
                f"CREATE TABLE {table} (id bigint GENERATED BY DEFAULT AS IDENTITY, v int)"
            )
    finally:
        migrator.close()
    for sql in (
        f"INSERT INTO {table} (v) VALUES (1)",
        f"UPDATE {table} SET v = 2",
        f"SELECT v FROM {table}",
        f"DELETE FROM {table}",
    ):
        assert _refusal(sql) == "ALLOWED", sql
    assert _refusal(f"CREATE TABLE other_{table} (id int)").startswith("refused")
