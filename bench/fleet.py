"""The fleet at 3,000 connections in one account and Region (the moto extension pages them 100
at a time), each with two secrets: one of its own and one shared with 99 others (30 team
secrets). Of them, 5 were edited in AWS since the last sweep and one team secret has a newer
version in Vault (100 connections drift).

- sweep_aws_calls_3000, sweep_vault_reads_3000, sweep_distinct_paths_3000: requests counted on
  the wire (loopback proxies in front of moto and OpenBao) during one sweep; Vault reads of
  secret values (`/data/` paths) are counted apart and must be 0.
- sweep_ms_3000 and sweep_naive_ms_3000, median of BENCH_FLEET_RUNS runs each, interleaved,
  straight to the servers: the sweep against the naive loop (describe_connection, and a KV read
  of each secret, for every connection, one after another). sweep_vs_naive_ratio is their
  ratio. Each sweep run starts from the same recorded state.
- connections_page_ms_3000 (first page) and connections_page_deep_ms_3000 (a page near the
  end, by keyset cursor): median GETs through the Django test client as an approver (session,
  user and permissions included); connections_page_queries is the most queries any of them
  took.
"""

from __future__ import annotations

import os
import statistics
import time
import uuid

import requests

COUNT = 3000
TEAMS = 30
EDITED = 5
RUNS = int(os.environ.get("BENCH_FLEET_RUNS", "3"))
PAGE_RUNS = int(os.environ.get("BENCH_FLEET_PAGE_RUNS", "50"))
ACCOUNT = "424242424242"


def _put(bao, path: str, **values) -> None:
    """One KV v2 write over HTTP (thousands: the CLI would spawn a process for each)."""
    response = requests.put(
        f"{bao.url}/v1/secret/data/{path}",
        json={"data": values},
        headers={"X-Vault-Token": bao.extra["token"]},
        timeout=10,
    )
    response.raise_for_status()


def _seed(ctx):
    """Connections in moto, their rows here as pushed, the secrets in OpenBao."""
    from concurrent.futures import ThreadPoolExecutor

    from connections_app import document as doc
    from connections_app import eventbridge
    from connections_app.models import Connection, Target

    moto = ctx.moto.url
    role = f"arn:aws:iam::{ACCOUNT}:role/bench-fleet"
    trust = {"role_arn": role, "external_id": "bench"}
    requests.post(f"{moto}/moto-ext/sts/role", json=trust, timeout=10).raise_for_status()
    reset = {"account_id": ACCOUNT, "region": "us-east-1"}
    requests.post(f"{moto}/moto-ext/reset", json=reset, timeout=60).raise_for_status()
    requests.post(
        f"{moto}/moto-ext/connections/seed",
        json={"count": COUNT, "prefix": "fleet-", "account_id": ACCOUNT},
        timeout=120,
    ).raise_for_status()
    Connection.objects.filter(target__name="bench-fleet").delete()  # an earlier run's
    target, _ = Target.objects.update_or_create(
        name="bench-fleet",
        defaults={"region": "us-east-1", "role_arn": role, "external_id": "bench"},
    )
    run = uuid.uuid4().hex[:6]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: _put(ctx.bao, f"fleet-{run}/team-{i}", token=f"t{i}"),
                      range(TEAMS)))  # fmt: skip
        list(pool.map(lambda i: _put(ctx.bao, f"fleet-{run}/conn-{i}", api_key=f"k{i}"),
                      range(COUNT)))  # fmt: skip
    listed, token = [], None
    while True:
        items, token = eventbridge.list_connections(target, token)
        listed += items
        if not token:
            break
    rows = []
    for i, item in enumerate(sorted(listed, key=lambda item: item["Name"])):
        document = {
            "Name": item["Name"],
            "AuthorizationType": "API_KEY",
            "AuthParameters": {
                "ApiKeyAuthParameters": {
                    "ApiKeyName": "x-api-key",
                    "ApiKeyValue": _leaf(f"secret/fleet-{run}/conn-{i}#api_key", f"k{i}", doc),
                },
                "InvocationHttpParameters": {
                    "HeaderParameters": [
                        {
                            "Key": "X-Team",
                            "Value": _leaf(
                                f"secret/fleet-{run}/team-{i % TEAMS}#token", f"t{i % TEAMS}", doc
                            ),  # fmt: skip
                            "IsValueSecret": True,
                        }
                    ]
                },
            },
        }
        rows.append(
            Connection(
                target=target,
                name=item["Name"],
                arn=item["ConnectionArn"],
                authorization_type="API_KEY",
                state=item["ConnectionState"],
                created_in_aws_at=item.get("CreationTime"),
                modified_at=item.get("LastModifiedTime"),
                authorized_at=item.get("LastAuthorizedTime"),
                document=document,
            )
        )
    Connection.objects.bulk_create(rows, batch_size=500)
    # 3,000 rows deleted and made again each run: give the planner the statistics autovacuum
    # would give a table that grew over months (else it sorts the target's rows for a page).
    from django.db import connection as db

    if db.vendor == "postgresql":
        with db.cursor() as cursor:
            cursor.execute("VACUUM ANALYZE connections_app_connection")
    for name in [row.name for row in rows[:EDITED]]:  # edited in the console since
        touch = {"name": name, "account_id": ACCOUNT}
        requests.post(f"{moto}/moto-ext/connection/touch", json=touch, timeout=10)
    _put(ctx.bao, f"fleet-{run}/team-0", token="t0-rotated")  # 100 connections drift
    return target


def _leaf(vault: str, value: str, doc) -> dict:
    return {"vault": vault, "version": 1, "fingerprint": doc.fingerprint(value), "redacted": True}


def _naive(target) -> None:
    """What a sweep would cost done the obvious way: every connection described, every secret
    of every connection read."""
    from connections_app import document as doc
    from connections_app import eventbridge, vault
    from connections_app.models import Connection

    for connection in Connection.objects.filter(target=target).exclude(state="DELETED"):
        eventbridge.describe_connection(target, connection.name)
        for _, ref in doc.references(doc.unredacted(connection.document)):
            vault.read(vault.Reference(ref.path, ref.key))


def _restore(target, snapshot) -> None:
    """The recorded state before a sweep, so that every run does the same work."""
    from connections_app.models import Connection

    for pk, modified, drift, changed in snapshot:
        Connection.objects.filter(pk=pk).update(
            modified_at=modified, drift=drift, changed_outside=changed
        )


def run(ctx) -> dict:
    from django.conf import settings
    from django.contrib.auth.models import Group, User
    from django.db import connection as db
    from django.test import Client, override_settings
    from django.test.utils import CaptureQueriesContext
    from django.urls import reverse

    from connections_app import eventbridge, roles, services, vault
    from connections_app.models import Connection
    from tests.faults import FaultProxy

    target = _seed(ctx)
    snapshot = list(
        Connection.objects.filter(target=target).values_list(
            "pk", "modified_at", "drift", "changed_outside"
        )
    )

    # Calls on the wire, for one sweep.
    with FaultProxy(ctx.moto.url) as aws, FaultProxy(ctx.bao.url) as bao:
        os.environ["AWS_ENDPOINT_URL"], settings.VAULT_ADDR = aws.url, bao.url
        eventbridge.reset_clients()
        vault.reset_client()
        try:
            swept = services.sweep_target(target.pk)
        finally:
            os.environ["AWS_ENDPOINT_URL"], settings.VAULT_ADDR = ctx.moto.url, ctx.bao.url
            eventbridge.reset_clients()
            vault.reset_client()
        aws_calls = sum(1 for _, path, t in aws.seen if t.startswith("AWSEvents."))
        sts_calls = sum(1 for method, path, t in aws.seen if not t)  # AssumeRole (query API)
        # The sweep's own reads: an audit checkpoint its events made due (signed and stored in
        # Vault by a background thread) is not the sweep's work.
        store = settings.AUDIT_CHECKPOINT_PATH.strip("/")
        reads = [path for method, path, _ in bao.seen if method == "GET" and store not in path]
        metadata = [p for p in reads if "/metadata/" in p]
        values = [p for p in reads if "/data/" in p]
    assert swept.ok, swept.error
    figures = {
        "sweep_aws_calls_3000": aws_calls,
        "sweep_sts_calls_3000": sts_calls,
        "sweep_vault_reads_3000": len(metadata),
        "sweep_distinct_paths_3000": swept.figures["distinct_paths"],
        "sweep_vault_value_reads_3000": len(values),
        "sweep_drifted_3000": swept.figures["drifted"],
        "sweep_changed_outside_3000": swept.figures["changed_outside"],
    }

    # Time: the sweep against the naive loop, interleaved.
    sweeps, naives = [], []
    for _ in range(RUNS):
        _restore(target, snapshot)
        started = time.perf_counter()
        assert services.sweep_target(target.pk).ok
        sweeps.append((time.perf_counter() - started) * 1000)
        started = time.perf_counter()
        _naive(target)
        naives.append((time.perf_counter() - started) * 1000)
    figures["sweep_ms_3000"] = round(statistics.median(sweeps), 1)
    figures["sweep_naive_ms_3000"] = round(statistics.median(naives), 1)
    figures["sweep_vs_naive_ratio"] = round(
        figures["sweep_ms_3000"] / figures["sweep_naive_ms_3000"], 3
    )

    # The connections page, first and deep, through Django.
    approver, _ = User.objects.get_or_create(username="bench-fleet-approver")
    approver.groups.set([Group.objects.get(name=roles.APPROVERS)])
    client = Client()
    client.force_login(approver)
    url = reverse("connection_list")
    last = Connection.objects.filter(target=target).order_by("-name", "-id")[60]
    deep = {"target": target.pk, "after": f"{last.name} {last.pk}"}
    first = {"target": target.pk}
    times = {"first": [], "deep": []}
    most = 0
    with override_settings(ALLOWED_HOSTS=["testserver"]):
        for _ in range(5):  # warm-up
            client.get(url, first)
        for _ in range(PAGE_RUNS):
            for kind, query in (("first", first), ("deep", deep)):
                with CaptureQueriesContext(db) as queries:
                    started = time.perf_counter()
                    response = client.get(url, query)
                    times[kind].append((time.perf_counter() - started) * 1000)
                assert response.status_code == 200 and b"fleet-" in response.content
                most = max(most, len(queries))
    figures["connections_page_ms_3000"] = round(statistics.median(times["first"]), 2)
    figures["connections_page_deep_ms_3000"] = round(statistics.median(times["deep"]), 2)
    figures["connections_page_queries"] = most
    return figures
