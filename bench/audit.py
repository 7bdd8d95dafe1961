"""Audit review on PostgreSQL: keyset pages, filtered page, streamed export and chain verify.

Two databases beside the bench one, filled once by `generate_audit_events` and kept between
runs: <bench>_audit_1m (1,000,000 events of about 1 KB over a year) and <bench>_audit_10k (10,000),
for the growth ratio. Their own databases, because the other sections append events to the bench
database, which would crowd a year of synthetic history into one instant.

- page figures: median wall time of GETs through the Django test client as an auditor (session,
  user and permissions included), after warm-up; the two databases are measured in alternating
  blocks so that machine noise hits both alike. "deep" pages start at random cursors among the
  oldest 5% of events; "filtered" is action=connection.vault.resolve on one day (days vary);
  "prefix" is a connection-name prefix matching about ten names (connection=partner-0047*),
  or every request action (action=connection.request.*).
- export: the JSON Lines view consumed through the test client's streaming iterator; first byte
  is the time to the first chunk (200 lines), memory is the peak RSS (VmHWM, reset through
  /proc/self/clear_refs before each run) minus the RSS before it.
- verify: audit.verify_chain() over the whole 1M chain; verify_index: audit.verify_secret_uses()
  (the secret-use index against the events' data), the other half of `verify_audit_chain`, as
  events of the whole log per second.
"""

import os
import random
import statistics
import sys
import time
from contextlib import contextmanager
from datetime import timedelta

RUNS = int(os.environ.get("BENCH_AUDIT_RUNS", "200"))  # page requests per kind and database
ROUNDS = 10
BIG, SMALL = 1_000_000, 10_000
EXPORT_RUNS = VERIFY_RUNS = int(os.environ.get("BENCH_AUDIT_HEAVY_RUNS", "3"))
_rnd = random.Random(5)  # noqa: S311 - picks bench URLs, nothing secret


@contextmanager
def _database(name: str):
    """Point Django's default connection at another database on the same server."""
    from django.db import connections

    conn = connections["default"]
    previous = conn.settings_dict["NAME"]
    conn.close()
    conn.settings_dict["NAME"] = name
    try:
        yield
    finally:
        conn.close()
        conn.settings_dict["NAME"] = previous


def _prepare(count: int):
    """Migrate, fill up to `count` events once, and return a logged-in auditor client."""
    from django.contrib.auth.models import Group, User
    from django.core.management import call_command
    from django.db import connection
    from django.test import Client, override_settings

    from connections_app import roles
    from connections_app.models import AuditChainHead

    call_command("migrate", verbosity=0)
    head = AuditChainHead.objects.filter(id=1).first()
    have = head.last_seq if head else 0
    if have < count:
        print(f"generating {count - have} audit events (once)...", file=sys.stderr, flush=True)
        with override_settings(DEBUG=True):  # the generator refuses to run without it
            call_command("generate_audit_events", count - have, "--days", "365", verbosity=0)
        with connection.cursor() as cursor:
            for table in ("connections_app_auditevent", "connections_app_auditsecretuse"):
                cursor.execute(f"VACUUM ANALYZE {table}")
    user, _ = User.objects.get_or_create(username="bench-auditor")
    user.groups.set([Group.objects.get(name=roles.AUDITORS)])
    client = Client()
    client.force_login(user)
    return client


def _urls(count: int) -> dict:
    from connections_app.models import AuditEvent

    deep = [f"/audit/?before={_rnd.randint(100, count // 20)}" for _ in range(50)]
    first = AuditEvent.objects.order_by("id").values_list("created_at", flat=True).first()
    days = [(first + timedelta(days=d)).date() for d in range(100, 300, 7)]
    filtered = [f"/audit/?action=connection.vault.resolve&since={day}&until={day}" for day in days]
    # Prefixes (a trailing *): about ten connection names each, and every request action.
    areas = ("billing", "crm", "shipping", "search", "ledger", "partner", "webhooks", "identity")
    prefix = [f"/audit/?connection={area}-0{n:03d}*" for area in areas for n in (12, 345, 471)]
    prefix.append("/audit/?action=connection.request.*")
    return {"first": ["/audit/"], "deep": deep, "filtered": filtered, "prefix": prefix}


def _timed(client, url: str) -> float:
    start = time.perf_counter()
    response = client.get(url)
    elapsed = time.perf_counter() - start
    assert response.status_code == 200, (url, response.status_code)
    return elapsed


def _pages(names: dict) -> dict:
    """{(size, kind): [seconds]} measured in alternating blocks across the databases."""
    setups, samples = {}, {}
    for size, name in names.items():
        with _database(name):
            client = _prepare(size)
            setups[size] = (client, _urls(size))
    per_round = max(1, RUNS // ROUNDS)
    for _ in range(ROUNDS):
        for size, name in names.items():
            client, urls = setups[size]
            with _database(name):
                for kind, choices in urls.items():
                    for url in choices[:3]:  # warm the new connection and the caches
                        _timed(client, url)
                    times = samples.setdefault((size, kind), [])
                    times += [_timed(client, _rnd.choice(choices)) for _ in range(per_round)]
    return samples


def _queries(name: str) -> int:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with _database(name):
        client = _prepare(BIG)
        counts = []
        for choices in _urls(BIG).values():
            with CaptureQueriesContext(connection) as queries:
                _timed(client, choices[0])
            counts.append(len(queries))
    return max(counts)


def _rss_kb(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _export(client) -> tuple[float, float, float, int]:
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")  # resets VmHWM to the current RSS
    before = _rss_kb("VmRSS")
    start = time.perf_counter()
    response = client.get("/audit/export.jsonl")
    chunks = iter(response.streaming_content)
    lines = next(chunks).count(b"\n")
    first_byte = time.perf_counter() - start
    for chunk in chunks:
        lines += chunk.count(b"\n")
    elapsed = time.perf_counter() - start
    response.close()
    growth_mb = (_rss_kb("VmHWM") - before) / 1024
    return lines / elapsed, first_byte, growth_mb, lines


def _verify(events: int = 0) -> float:
    """Events per second of verify_chain, or with `events` (the log's size) verify_secret_uses."""
    from connections_app import audit

    start = time.perf_counter()
    result = audit.verify_secret_uses() if events else audit.verify_chain()
    elapsed = time.perf_counter() - start
    assert result.ok, result
    return (events or result.checked) / elapsed


def run(ctx) -> dict:
    from bench.__main__ import ensure_database

    base, _, bench_name = ctx.database_url.rpartition("/")
    names = {BIG: f"{bench_name}_audit_1m", SMALL: f"{bench_name}_audit_10k"}
    for name in names.values():
        ensure_database(f"{base}/{name}")
    samples = _pages(names)

    def ms(size, kind):
        return statistics.median(samples[(size, kind)]) * 1000

    with _database(names[BIG]):
        client = _prepare(BIG)
        exports = [_export(client) for _ in range(EXPORT_RUNS)]
        verifies = [_verify() for _ in range(VERIFY_RUNS)]
        from connections_app.models import AuditEvent

        events = AuditEvent.objects.order_by("-id").values_list("id", flat=True).first()
        index_checks = [_verify(events) for _ in range(VERIFY_RUNS)]
    assert all(e[3] == events for e in exports), "the export missed events"
    return {
        "audit_events_1m": events,
        "audit_page_first_ms_1m": round(ms(BIG, "first"), 2),
        "audit_page_deep_ms_1m": round(ms(BIG, "deep"), 2),
        "audit_page_first_ms_10k": round(ms(SMALL, "first"), 2),
        "audit_page_deep_ms_10k": round(ms(SMALL, "deep"), 2),
        "audit_page_queries": _queries(names[BIG]),
        "audit_page_growth_ratio": round(
            max(ms(BIG, "first") / ms(SMALL, "first"), ms(BIG, "deep") / ms(SMALL, "deep")), 3
        ),
        "audit_filtered_ms_1m": round(ms(BIG, "filtered"), 2),
        "audit_prefix_ms_1m": round(ms(BIG, "prefix"), 2),
        "export_events_per_s": round(statistics.median(e[0] for e in exports)),
        "export_first_byte_ms": round(statistics.median(e[1] for e in exports) * 1000, 2),
        "export_rss_growth_mb": round(statistics.median(e[2] for e in exports), 1),
        "verify_events_per_s": round(statistics.median(verifies)),
        "verify_index_events_per_s": round(statistics.median(index_checks)),
    }
