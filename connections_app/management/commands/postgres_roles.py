"""Print the SQL that sets up least-privilege PostgreSQL roles: an owner for migrations and an
app role that may only read and append the audit log."""

import re

from django.core.management.base import BaseCommand, CommandError
from django.db import connection

from connections_app.models import AuditChainHead, AuditCheckpoint, AuditEvent, AuditSecretUse

# Read and append only: no UPDATE, DELETE or TRUNCATE for the app.
APPEND_ONLY = (AuditEvent, AuditSecretUse, AuditCheckpoint)
# Every append moves the head (UPDATE); nothing ever deletes it.
HEAD = AuditChainHead
_ROLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")


def roles_sql(*, owner: str, app: str, database: str, schema: str = "public") -> str:
    """The set-up as one idempotent script, for a superuser (or a role with CREATEROLE)."""
    for name in (owner, app, schema):
        if not _ROLE.fullmatch(name):
            raise ValueError(f"{name!r}: use letters, digits and _ (at most 63).")
    o, a, s = f'"{owner}"', f'"{app}"', f'"{schema}"'
    db = '"' + database.replace('"', '""') + '"'
    restricted = [
        (model._meta.db_table, "UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER")
        for model in APPEND_ONLY
    ] + [(HEAD._meta.db_table, "DELETE, TRUNCATE, REFERENCES, TRIGGER")]
    revokes = "\n".join(
        f"    IF to_regclass('{schema}.{table}') IS NOT NULL THEN\n"
        f"        EXECUTE 'REVOKE {privileges} ON {schema}.{table} FROM {a}, PUBLIC';\n"
        "    END IF;"
        for table, privileges in restricted
    )
    return f"""-- Least-privilege roles for database {db} (python manage.py postgres_roles).
-- Run as a superuser, before the first migrate and again after every migrate: it is idempotent.
-- The owner runs migrations and owns the tables (only an owner may TRUNCATE, ALTER or drop
-- the append-only triggers); the app reads and appends the audit log and nothing more there.
-- Passwords are not set here: \\password {owner} and \\password {app} in psql.
BEGIN;
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{owner}') THEN
        CREATE ROLE {o} LOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{app}') THEN
        CREATE ROLE {a} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS;
    END IF;
END
$$;
GRANT CONNECT ON DATABASE {db} TO {o}, {a};
GRANT USAGE, CREATE ON SCHEMA {s} TO {o};
GRANT USAGE ON SCHEMA {s} TO {a};
REVOKE CREATE ON SCHEMA {s} FROM PUBLIC;  -- PostgreSQL before 15 let every role create here

-- Tables and sequences the owner creates in later migrations: the app may use them normally...
ALTER DEFAULT PRIVILEGES FOR ROLE {o} IN SCHEMA {s}
    GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {a};
ALTER DEFAULT PRIVILEGES FOR ROLE {o} IN SCHEMA {s}
    GRANT USAGE, SELECT ON SEQUENCES TO {a};
-- ...and the ones that exist now,
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {s} TO {a};
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA {s} TO {a};
-- except the audit log: read and append only (a new audit table must be added here).
DO $$
BEGIN
{revokes}
END
$$;
COMMIT;
"""  # noqa: S608 - the names are checked above; the script is printed for psql


class Command(BaseCommand):
    help = (
        "Print the SQL for least-privilege PostgreSQL roles: --owner runs migrations, --app "
        "serves requests with INSERT and SELECT only on the audit tables. Pipe it into psql as "
        "a superuser; run it again after every migrate."
    )

    def add_arguments(self, parser):
        parser.add_argument("--owner", required=True, help="role that owns tables, runs migrate")
        parser.add_argument("--app", required=True, help="role the app connects as")
        parser.add_argument(
            "--database", help="database name (default: the one DATABASE_URL names)"
        )

    def handle(self, *args, owner: str, app: str, database: str | None, **options):
        if owner == app:
            raise CommandError("--owner and --app must be two different roles.")
        try:
            sql = roles_sql(
                owner=owner, app=app, database=database or connection.settings_dict["NAME"]
            )
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(sql, ending="")
