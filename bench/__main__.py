"""`make bench`: figures printed as a table and merged into bench-results.json.

`python -m bench [section ...]` runs the named sections (default: all) against a dev OpenBao, a
moto server and PostgreSQL (BENCH_DATABASE_URL, default the local `bench` database, created if
missing). Each section is a module with `run(ctx) -> dict` of figures.
"""

import importlib
import json
import os
import sys
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parent.parent
SECTIONS = ("approve", "load", "audit", "fleet")
DEFAULT_DB = "postgres://postgres@127.0.0.1:5432/bench"


def ensure_database(url: str) -> None:
    """Create the PostgreSQL database named in `url` when it does not exist yet."""
    if not url.startswith(("postgres://", "postgresql://")):
        return
    import psycopg

    base, _, name = url.split("?", 1)[0].rpartition("/")
    with psycopg.connect(f"{base}/postgres", autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            conn.execute(f'CREATE DATABASE "{name}"')


def main(argv: list[str]) -> None:
    sys.path.insert(0, str(ROOT))
    sections = argv or list(SECTIONS)
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        sys.exit(f"unknown bench section(s): {', '.join(sorted(unknown))}; known: {SECTIONS}")
    from connections_app import devstack

    database_url = os.environ.get("BENCH_DATABASE_URL", DEFAULT_DB)
    ensure_database(database_url)
    bao = devstack.start_openbao()
    moto = devstack.start_moto(script=str(ROOT / "tests" / "moto_ext.py"))
    results: dict = {}
    try:
        os.environ.update(
            DJANGO_SETTINGS_MODULE="config.settings_test",
            DATABASE_URL=database_url,
            VAULT_ADDR=bao.url,
            VAULT_TOKEN=bao.extra["token"],
            AWS_ENDPOINT_URL=moto.url,
            AWS_ACCESS_KEY_ID="testing",
            AWS_SECRET_ACCESS_KEY="testing",  # noqa: S105 - moto's dummy credentials
            AWS_REGION="us-east-1",
            AWS_DEFAULT_REGION="us-east-1",
        )
        import django

        django.setup()
        from django.conf import settings
        from django.core.management import call_command

        settings.ALLOWED_HOSTS = ["testserver", "127.0.0.1", "localhost"]
        # As make run and production have it: audit checkpoints are signed (a missing Transit
        # key would make every process retry, and log, a failed checkpoint once a minute).
        devstack.seed_audit_signing(bao.url, bao.extra["token"])
        call_command("migrate", verbosity=0)
        from django.contrib.auth.models import Group

        from connections_app import roles
        from connections_app.models import Scope

        Scope.objects.get_or_create(  # the bench's requesters reference its own secrets
            group=Group.objects.get(name=roles.REQUESTERS),
            defaults={"path_prefixes": "secret/", "allowed_hosts": "auth.example.com"},
        )
        ctx = SimpleNamespace(bao=bao, moto=moto, database_url=database_url, root=ROOT)
        for name in sections:
            results.update(importlib.import_module(f"bench.{name}").run(ctx))
    finally:
        bao.stop()
        moto.stop()
    width = max(len(k) for k in results)
    print(f"{'figure'.ljust(width)}  value")
    for key, value in results.items():
        print(f"{key.ljust(width)}  {value}")
    out = ROOT / "bench-results.json"
    existing = json.loads(out.read_text()) if out.exists() else {}
    existing.update(results)
    out.write_text(json.dumps(existing, indent=2, sort_keys=True) + "\n")
    print(f"written to {out.name}")


if __name__ == "__main__":
    main(sys.argv[1:])
