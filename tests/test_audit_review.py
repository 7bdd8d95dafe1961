"""Audit log review: filters, keyset pages, event detail, export, fingerprint correlation,
read-only admin and the synthetic event generator."""

import csv
import io
import json
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from connections_app import audit, audit_review, services
from connections_app import document as doc
from connections_app.models import AuditCheckpoint, AuditEvent, AuditSecretUse
from tests import rawsql

pytestmark = pytest.mark.django_db
LIST = reverse("audit_list")
PAGE = audit_review.PAGE_SIZE


def _generate(settings, count, *args):
    settings.DEBUG = True
    call_command("generate_audit_events", count, *args, stdout=io.StringIO())
    settings.DEBUG = False


@pytest.fixture
def generated(settings):
    """Realistic synthetic events over 20 days (newest first), as the benchmark uses them."""
    _generate(settings, 3 * PAGE + 17, "--days", "20")
    return list(AuditEvent.objects.order_by("-id"))


def _walk(client, query=""):
    """Every event id the list shows for a filter, following the Older links to the end."""
    ids, url = [], f"{LIST}?{query}"
    while url:
        response = client.get(url)
        assert response.status_code == 200
        page = response.context["page"]
        ids += [e.id for e in page.events]
        sep = "&" if query else ""
        url = f"{LIST}?{query}{sep}before={page.older}" if page.older else None
    return ids


def _export(client, fmt, query=""):
    response = client.get(f"{reverse(f'audit_export_{fmt}')}?{query}")
    assert response.status_code == 200
    assert response.streaming
    return b"".join(response.streaming_content).decode()


# ---------------------------------------------------------------------------
# Access


@pytest.mark.parametrize(
    "url",
    [
        LIST,
        reverse("audit_export_csv"),
        reverse("audit_export_jsonl"),
        reverse("audit_secret_uses") + "?reference=secret/x%23y",
    ],
)
def test_requester_without_audit_permission_gets_403(requester_client, url):
    assert requester_client.get(url).status_code == 403


def test_requester_cannot_open_an_event(requester_client, generated):
    assert requester_client.get(reverse("audit_detail", args=[generated[0].id])).status_code == 403


def test_anonymous_is_sent_to_login(client):
    response = client.get(LIST)
    assert response.status_code == 302
    assert reverse("login") in response["Location"]


@pytest.mark.parametrize("who", ["auditor_client", "approver_client", "admin_client_"])
def test_auditors_approvers_and_superusers_read_the_log(who, request, generated):
    response = request.getfixturevalue(who).get(LIST)
    assert response.status_code == 200
    assert [e.id for e in response.context["page"].events] == [e.id for e in generated[:PAGE]]


# ---------------------------------------------------------------------------
# Pages


def test_pages_walk_the_whole_log_newest_first(auditor_client, generated):
    assert _walk(auditor_client) == [e.id for e in generated]


def test_query_count_is_fixed_whatever_the_page(auditor_client, generated):
    counts = []
    for url in (LIST, f"{LIST}?before={generated[-5].id}", f"{LIST}?action=x&since=2020-01-01"):
        with CaptureQueriesContext(connection) as queries:
            assert auditor_client.get(url).status_code == 200
        counts.append(len(queries))
    # Session, user and permissions (Django's own), the page: the same count at any depth, and
    # nothing per row.
    assert len(set(counts)) == 1 and counts[0] <= 6


def _make(settings, count):
    _generate(settings, count)
    return list(AuditEvent.objects.order_by("-id").values_list("id", flat=True))


def test_exactly_one_page(settings, auditor_client):
    ids = _make(settings, PAGE)
    response = auditor_client.get(LIST)
    page = response.context["page"]
    assert [e.id for e in page.events] == ids
    assert page.older is None and page.newer is None
    assert 'data-testid="older"' not in response.content.decode()


def test_one_more_than_a_page(settings, auditor_client):
    ids = _make(settings, PAGE + 1)
    first = auditor_client.get(LIST).context["page"]
    assert [e.id for e in first.events] == ids[:PAGE]
    assert first.older == ids[PAGE - 1]
    response = auditor_client.get(f"{LIST}?before={first.older}")
    last = response.context["page"]
    assert [e.id for e in last.events] == ids[PAGE:]
    assert last.older is None
    # Back to newer from the last page gives the first page again.
    assert last.newer == ids[PAGE]
    again = auditor_client.get(f"{LIST}?after={last.newer}").context["page"]
    assert [e.id for e in again.events] == ids[:PAGE]
    assert again.newer is None


def test_newer_page_in_the_middle(auditor_client, generated):
    ids = [e.id for e in generated]
    middle = auditor_client.get(f"{LIST}?before={ids[2 * PAGE - 1]}").context["page"]
    assert [e.id for e in middle.events] == ids[2 * PAGE : 3 * PAGE]
    newer = auditor_client.get(f"{LIST}?after={middle.newer}").context["page"]
    assert [e.id for e in newer.events] == ids[PAGE : 2 * PAGE]
    assert newer.newer == ids[PAGE] and newer.older == ids[2 * PAGE - 1]


@pytest.mark.parametrize("cursor", ["before=1", "after=999999999"])
def test_cursor_past_the_end_shows_an_empty_page(auditor_client, generated, cursor):
    response = auditor_client.get(f"{LIST}?{cursor}")
    assert response.status_code == 200
    assert response.context["page"].events == []
    body = response.content.decode()
    assert "No events on this page" in body
    assert 'data-testid="newest"' in body


@pytest.mark.parametrize(
    ("query", "words"),
    [
        ("before=abc", "before: Enter a whole number"),
        ("before=0", "before: Ensure this value is greater than or equal to 1"),
        ("after=-3", "after: Ensure this value is greater than or equal to 0"),
        ("before=99999999999999999999999", "before:"),
    ],
)
def test_bad_cursor_gets_a_clear_message(auditor_client, generated, query, words):
    response = auditor_client.get(f"{LIST}?{query}")
    assert response.status_code == 400
    body = response.content.decode()
    assert words in body
    assert "Start again from the newest events" in body


def test_before_and_after_together_is_refused(auditor_client, generated):
    response = auditor_client.get(f"{LIST}?before=5&after=2")
    assert response.status_code == 400
    assert "either “before” or “after”" in response.content.decode()


def test_page_of_boundaries_directly(settings):
    ids = _make(settings, 7)
    qs = audit_review.events_filtered()
    full = audit_review.page_of(qs, size=7)
    assert [e.id for e in full.events] == ids and full.older is None
    cut = audit_review.page_of(qs, size=6)
    assert cut.older == ids[5]
    assert [e.id for e in audit_review.page_of(qs, before=cut.older, size=6).events] == ids[6:]
    assert audit_review.page_of(qs, after=ids[0], size=6).events == []


# ---------------------------------------------------------------------------
# Filters


def _field_values(events, field):
    counts = {}
    for e in events:
        counts[getattr(e, field)] = counts.get(getattr(e, field), 0) + 1
    return sorted((v for v in counts if v), key=lambda v: -counts[v])


@pytest.mark.parametrize(
    ("param", "field"),
    [
        ("actor", "actor_username"),
        ("action", "action"),
        ("connection", "connection_name"),
        ("outcome", "outcome"),
        ("arn", "arn"),
    ],
)
def test_each_exact_filter(auditor_client, generated, param, field):
    for value in _field_values(generated, field)[:2]:
        expected = [e.id for e in generated if getattr(e, field) == value]
        assert expected
        query = f"{param}={value}"
        assert _walk(auditor_client, query) == expected


def _days(events):
    return sorted({e.created_at.date() for e in events})


def test_date_range_is_whole_utc_days(auditor_client, generated):
    days = _days(generated)
    day = days[len(days) // 2]
    expected = [e.id for e in generated if e.created_at.date() == day]
    assert expected
    assert _walk(auditor_client, f"since={day}&until={day}") == expected
    since = [e.id for e in generated if e.created_at.date() >= day]
    assert _walk(auditor_client, f"since={day}") == since
    until = [e.id for e in generated if e.created_at.date() <= day]
    assert _walk(auditor_client, f"until={day}") == until


def test_date_range_outside_the_log_is_empty(auditor_client, generated):
    first = _days(generated)[0]
    before = first - timedelta(days=3)
    assert _walk(auditor_client, f"since={before}&until={before}") == []
    after = _days(generated)[-1] + timedelta(days=3)
    assert _walk(auditor_client, f"since={after}") == []


def test_the_first_and_last_days_there_are_are_valid_bounds(auditor_client, generated):
    everything = [e.id for e in generated]
    assert _walk(auditor_client, "since=0001-01-01&until=9999-12-31") == everything
    assert auditor_client.get("/audit/export.csv?until=9999-12-31").status_code == 200


def test_action_with_one_day(auditor_client, generated):
    action = "connection.vault.resolve"
    for day in _days(generated)[1:4]:
        expected = [e.id for e in generated if e.action == action and e.created_at.date() == day]
        assert _walk(auditor_client, f"action={action}&since={day}&until={day}") == expected


def test_combined_filters(auditor_client, generated):
    actor = next(e.actor_username for e in generated if e.outcome == "approved")
    expected = [e.id for e in generated if e.actor_username == actor and e.outcome == "approved"]
    assert expected
    assert _walk(auditor_client, f"actor={actor}&outcome=approved") == expected
    assert _walk(auditor_client, f"actor={actor}&outcome=approved&action=nothing.like.this") == []


def test_events_of_one_instant_keep_their_date(
    servers, auditor_client, requester, approver, make_document
):
    # An approval appends two events in one call with the same time: the date bounds must not
    # drop either of them.
    request = services.request_create(requester=requester, document=make_document())
    services.request_approve(request=request, approver=approver, seen_hash=request.document_hash)
    events = list(AuditEvent.objects.order_by("-id"))
    day = events[0].created_at.date()
    assert _walk(auditor_client, f"since={day}&until={day}") == [e.id for e in events]


@pytest.mark.parametrize(
    ("query", "field", "words"),
    [
        ("since=2026-02-30", "since", "Enter a day (2026-03-02) or a day and time"),
        ("since=2026-03-02&until=2026-03-01", "until", "The end comes before the start"),
        ("since=2026-03-02T14:30&until=2026-03-02T14:29", "until", "The end comes before"),
        ("range=2h", "range", "Select a valid choice"),
        ("outcome=won", "outcome", "Select a valid choice"),
        ("connection=" + "x" * 65, "connection", "at most 64 characters"),
    ],
)
def test_bad_filters_get_a_message_next_to_the_field(auditor_client, query, field, words):
    response = auditor_client.get(f"{LIST}?{query}")
    assert response.status_code == 400
    body = response.content.decode()
    assert f'id="id_{field}_error"' in body or field == "range"
    assert words in body
    assert "<title>Error: Audit log" in body
    assert 'data-testid="error-summary"' in body


def test_links_keep_the_filters(auditor_client, generated):
    since = _days(generated)[0]
    body = auditor_client.get(f"{LIST}?outcome=success&since={since}").content.decode()
    assert f"?outcome=success&amp;since={since}&amp;before=" in body
    assert f"export.jsonl?outcome=success&amp;since={since}" in body


# ---------------------------------------------------------------------------
# Export


def _hash_of(row: dict, data_text: str) -> str:
    header = "\t".join(
        str(v) if v is not None else ""
        for v in (
            row["id"],
            row["created_at"],
            row["actor_id"],
            row["actor_username"],
            row["action"],
            row["request_id"],
            row["connection_name"],
            row["outcome"],
            row["arn"],
            row["connection_state"],
        )
    )
    return audit._hash(row["prev_hash"], header, data_text)


def test_jsonl_export_is_the_stored_log(auditor_client, generated):
    lines = _export(auditor_client, "jsonl").splitlines()
    assert len(lines) == len(generated)
    for line, event in zip(lines, generated, strict=True):
        row = json.loads(line)
        assert row["id"] == event.id
        assert row["hash"] == event.hash and row["prev_hash"] == event.prev_hash
        assert row["data"] == json.loads(event.data)
        assert line.endswith(f'"data":{event.data}}}')  # spliced in as stored
        assert row["created_at"] == event.created_at.isoformat(timespec="microseconds")
        # Every line carries what is hashed: an export can be verified on its own.
        assert _hash_of(row, event.data) == event.hash


def test_csv_export_is_the_stored_log(auditor_client, generated):
    rows = list(csv.reader(io.StringIO(_export(auditor_client, "csv"))))
    assert rows[0] == list(audit_review.EXPORT_COLUMNS)
    assert len(rows) == len(generated) + 1
    for values, event in zip(rows[1:], generated, strict=True):
        row = dict(zip(audit_review.EXPORT_COLUMNS, values, strict=True))
        assert row["data"] == event.data
        assert int(row["id"]) == event.id and row["hash"] == event.hash
        assert row["actor_id"] == ("" if event.actor_id is None else str(event.actor_id))
        assert _hash_of(row, row["data"]) == event.hash


def test_export_follows_the_filter_and_ignores_the_cursor(auditor_client, generated):
    action = "connection.vault.resolve"
    expected = [e.id for e in generated if e.action == action]
    text = _export(auditor_client, "jsonl", f"action={action}&before={generated[3].id}")
    assert [json.loads(line)["id"] for line in text.splitlines()] == expected
    csv_text = _export(auditor_client, "csv", f"action={action}")
    assert [int(r[0]) for r in list(csv.reader(io.StringIO(csv_text)))[1:]] == expected


def test_export_chunks_join_up_exactly(settings):
    ids = _make(settings, 23)
    qs = audit_review.events_filtered()
    chunks = list(audit_review.export_chunks(qs, first=2, chunk=5))
    assert [len(c) for c in chunks] == [2, 5, 5, 5, 5, 1]
    assert [row[0] for c in chunks for row in c] == ids


def test_bad_filter_export_is_refused_with_a_message(auditor_client):
    response = auditor_client.get(reverse("audit_export_csv") + "?since=yesterday")
    assert response.status_code == 400
    assert "Enter a day (2026-03-02)" in response.content.decode()


@pytest.fixture
def resolved_pair(requester, approver, make_document, unique_name):
    """Two connections approved with the same API key secret, so the same fingerprint."""
    made = []
    for suffix in ("-a", "-b"):
        request = services.request_create(
            requester=requester, document=make_document("API_KEY", name=unique_name + suffix)
        )
        services.request_approve(
            request=request, approver=approver, seen_hash=request.document_hash
        )
        made.append(request)
    return made


def test_exports_and_pages_hold_no_secret_value(servers, auditor_client, resolved_pair, canaries):
    texts = [_export(auditor_client, "jsonl"), _export(auditor_client, "csv")]
    texts.append(auditor_client.get(LIST).content.decode())
    for event in AuditEvent.objects.all():
        texts.append(auditor_client.get(reverse("audit_detail", args=[event.id])).content.decode())
    fingerprint = AuditSecretUse.objects.first().fingerprint
    texts.append(
        auditor_client.get(
            reverse("audit_secret_uses"), {"fingerprint": fingerprint}
        ).content.decode()
    )
    joined = "\n".join(texts)
    assert "hmac-sha256:" in joined
    for value in canaries.values():
        assert value not in joined


# ---------------------------------------------------------------------------
# Event detail


def _detail(client, event_id, **params):
    response = client.get(reverse("audit_detail", args=[event_id]), params)
    assert response.status_code == 200
    return response


def test_detail_shows_document_and_diff_against_previous_version(
    servers, auditor_client, requester, make_document
):
    request = services.request_create(requester=requester, document=make_document("API_KEY"))
    edited = make_document("API_KEY", name=request.name, Description="new words")
    headers = edited["AuthParameters"]["InvocationHttpParameters"]["HeaderParameters"]
    headers.append({"Key": "X-Extra", "Value": "1", "IsValueSecret": False})
    edited["AuthParameters"]["ApiKeyAuthParameters"]["ApiKeyValue"]["version"] = 1
    services.request_update(request=request, editor=requester, document=edited)
    create, edit = AuditEvent.objects.filter(request_id=request.pk).order_by("id")

    first = _detail(auditor_client, create.id)
    assert first.context["previous"] is None
    assert "first version of the document" in first.content.decode()

    response = _detail(auditor_client, edit.id)
    assert response.context["previous"].id == create.id
    changes = {c.path: c for c in response.context["changes"]}
    assert changes["Description"].kind == "changed"
    assert (changes["Description"].old, changes["Description"].new) == ("partner API", "new words")
    added = "AuthParameters.InvocationHttpParameters.HeaderParameters[2].Key"
    assert changes[added].kind == "added" and changes[added].new == "X-Extra"
    pinned = changes["AuthParameters.ApiKeyAuthParameters.ApiKeyValue"]
    assert pinned.kind == "changed" and pinned.new["version"] == 1
    body = response.content.decode()
    assert 'data-testid="diff"' in body and "X-Extra" in body
    assert edit.hash in body


def test_diff_rules_for_secret_leaves():
    ref = {"vault": "secret/a#k", "version": None, "redacted": True}
    read3 = {**ref, "version": 3, "fingerprint": "hmac-sha256:" + "1" * 64}
    read4 = {**ref, "version": 4, "fingerprint": "hmac-sha256:" + "2" * 64}
    moved = {**ref, "vault": "secret/b#k"}
    diff = audit_review.document_diff
    assert diff({"P": ref}, {"P": read3}) == []  # "latest" read as version 3: same document
    assert diff({"P": {**ref, "version": 3}}, {"P": read3}) == []
    assert [c.kind for c in diff({"P": {**ref, "version": 2}}, {"P": read3})] == ["changed"]
    assert [c.kind for c in diff({"P": ref}, {"P": {**ref, "version": 1}})] == ["changed"]
    assert [c.kind for c in diff({"P": read3}, {"P": read4})] == ["changed"]  # value rotated
    assert [c.kind for c in diff({"P": ref}, {"P": moved})] == ["changed"]
    assert [c.kind for c in diff({"L": [1, 2]}, {"L": [1]})] == ["removed"]


def test_resolve_event_diff_shows_no_change_for_the_read_it_made(
    servers, auditor_client, resolved_pair
):
    resolve = AuditEvent.objects.filter(
        request_id=resolved_pair[0].pk, action="connection.vault.resolve"
    ).get()
    response = _detail(auditor_client, resolve.id)
    assert response.context["previous"].action == "connection.request.create"
    assert response.context["changes"] == []
    assert 'data-testid="no-changes"' in response.content.decode()


def test_chain_status_without_checkpoint_verifies_from_the_start(auditor_client, generated):
    event = generated[5]
    response = _detail(auditor_client, event.id)
    chain = response.context["chain"]
    assert chain.ok and chain.checked == event.id
    assert 'data-testid="chain-ok"' in response.content.decode()


def _sign_checkpoint():
    """A signed checkpoint of the head; signing leaves the database copy event pages use."""
    call_command("audit_checkpoint", stdout=io.StringIO())


def test_chain_status_from_a_checkpoint(servers, auditor_client, generated):
    _sign_checkpoint()
    checkpoint = AuditCheckpoint.objects.get()
    assert checkpoint.seq == generated[0].id and checkpoint.hash == generated[0].hash
    # The checkpoint's own event: only its content is checked against the checkpoint.
    response = _detail(auditor_client, generated[0].id)
    assert response.context["chain"].ok and response.context["chain"].checked == 1
    assert "this event is that checkpoint" in response.content.decode()
    _disable_trigger()
    rawsql.execute(
        "UPDATE connections_app_auditevent SET outcome = 'forged' WHERE id = %s",
        [generated[0].id],
    )
    response = _detail(auditor_client, generated[0].id)
    assert not response.context["chain"].ok
    assert response.context["chain"].reason == "its content does not match its hash"
    assert 'data-testid="chain-broken"' in response.content.decode()


def test_chain_status_after_a_checkpoint_and_tampering(servers, auditor_client, generated):
    _sign_checkpoint()
    _append_steps(3)
    newest = AuditEvent.objects.order_by("-id").first()
    response = _detail(auditor_client, newest.id)
    assert response.context["chain_start"]["seq"] == generated[0].id
    assert response.context["chain"].ok and response.context["chain"].checked == 3
    _disable_trigger()
    rawsql.execute(
        "UPDATE connections_app_auditevent SET outcome = 'forged' WHERE id = %s", [newest.id - 1]
    )
    response = _detail(auditor_client, newest.id)
    assert not response.context["chain"].ok
    assert response.context["chain"].bad_event == newest.id - 1
    assert 'data-testid="chain-broken"' in response.content.decode()


def test_far_from_a_checkpoint_the_page_offers_to_verify(auditor_client, generated, monkeypatch):
    monkeypatch.setattr(audit_review, "VERIFY_ON_PAGE", 10)
    event = generated[0]
    response = _detail(auditor_client, event.id)
    assert response.context["chain"] is None
    assert 'data-testid="verify-now"' in response.content.decode()
    response = _detail(auditor_client, event.id, verify="all")
    assert response.context["chain"].ok and response.context["chain"].checked == event.id


def test_older_events_name_the_verification_that_covered_them(
    servers, auditor_client, generated, monkeypatch
):
    _sign_checkpoint()
    monkeypatch.setattr(audit_review, "VERIFY_ON_PAGE", 10)
    response = _detail(auditor_client, generated[-30].id)
    assert response.context["chain"] is None
    assert response.context["chain_start"]["covered_by"].seq == generated[0].id
    body = response.content.decode()
    assert 'data-testid="chain-covered"' in body and 'data-testid="verify-now"' in body


def test_rewritten_chain_differs_from_its_database_checkpoint(generated):
    # The database's own checkpoints are still checked (signed ones: tests/security).
    audit.checkpoint_record(audit.verify_chain())
    _disable_trigger()
    # Forge event 2 and recompute every later hash and the head: the links all fit again.
    events = list(AuditEvent.objects.order_by("id"))
    prev = events[0].hash
    for e in events[1:]:
        outcome = "forged" if e.id == 2 else e.outcome
        fields = {f: getattr(e, f) for f in ("id", "created_at", "actor_id", "actor_username")}
        fields.update(action=e.action, request_id=e.request_id, connection_name=e.connection_name)
        fields.update(outcome=outcome, arn=e.arn, connection_state=e.connection_state)
        digest = audit._hash(prev, audit.header_of(fields), e.data)
        rawsql.execute(
            "UPDATE connections_app_auditevent SET outcome = %s, prev_hash = %s, hash = %s "
            "WHERE id = %s",
            [outcome, prev, digest, e.id],
        )
        prev = digest
    rawsql.execute("UPDATE connections_app_auditchainhead SET last_hash = %s WHERE id = 1", [prev])
    with pytest.raises(CommandError, match="differs from an earlier checkpoint"):
        call_command("verify_audit_chain", "--database-only")


@pytest.mark.parametrize("chunk", [1, 7, 5000])
def test_verify_in_chunks(generated, chunk):
    result = audit.verify_chain(chunk=chunk)
    assert result.ok and result.checked == len(generated)
    assert (result.last_seq, result.last_hash) == (generated[0].id, generated[0].hash)
    part = audit.verify_range(after=10, after_hash=generated[-10].hash, up_to=40, chunk=chunk)
    assert part.ok and part.checked == 30 and part.last_hash == generated[-40].hash


def test_verify_stops_at_the_first_bad_event_with_chunks_still_queued(generated):
    _disable_trigger()
    rawsql.execute("UPDATE connections_app_auditevent SET actor_username = 'eve' WHERE id = 9")
    result = audit.verify_chain(chunk=4)
    assert (result.ok, result.bad_event, result.checked) == (False, 9, 8)
    assert AuditEvent.objects.count() == len(generated)  # the connection is still usable


def _disable_trigger():
    if connection.vendor == "postgresql":
        rawsql.execute("ALTER TABLE connections_app_auditevent DISABLE TRIGGER USER")


def _append_steps(count):
    from django.db import transaction

    with transaction.atomic():
        audit.append([{"action": "test.step"} for _ in range(count)])


# ---------------------------------------------------------------------------
# Fingerprint correlation


def test_fingerprints_are_indexed_when_recorded(servers, resolved_pair):
    for request in resolved_pair:
        resolve = AuditEvent.objects.get(request_id=request.pk, action="connection.vault.resolve")
        uses = {u.path: u for u in AuditSecretUse.objects.filter(event=resolve)}
        expected = {
            path: leaf
            for path, leaf in doc.flatten(json.loads(resolve.data)["document"])
            if doc.is_reference(leaf)
        }
        assert set(uses) == set(expected)
        for path, leaf in expected.items():
            assert uses[path].fingerprint == leaf["fingerprint"]
            assert uses[path].reference == leaf["vault"]
            assert uses[path].version == leaf["version"]


def test_migration_backfills_the_fingerprint_index(servers, resolved_pair):
    import importlib

    from django.apps import apps

    migration = importlib.import_module("connections_app.migrations.0003_audit_review")
    columns = ("event_id", "path", "reference", "version", "fingerprint")
    indexed = sorted(AuditSecretUse.objects.values_list(*columns))
    assert indexed
    AuditSecretUse.objects.all().delete()  # a derived index, rebuilt from the events' data
    migration.backfill(apps, None)
    assert sorted(AuditSecretUse.objects.values_list(*columns)) == indexed


def test_same_value_is_found_across_connections(servers, auditor_client, resolved_pair):
    a, b = (
        AuditEvent.objects.get(request_id=r.pk, action="connection.vault.resolve")
        for r in resolved_pair
    )
    path = "AuthParameters.ApiKeyAuthParameters.ApiKeyValue"
    fp = AuditSecretUse.objects.get(event=a, path=path).fingerprint
    assert AuditSecretUse.objects.get(event=b, path=path).fingerprint == fp

    response = auditor_client.get(reverse("audit_secret_uses"), {"fingerprint": fp})
    assert response.status_code == 200
    assert [row["event"].id for row in response.context["rows"]] == [b.id, a.id]

    detail = _detail(auditor_client, b.id)
    row = next(s for s in detail.context["secrets"] if s["path"] == path)
    assert (row["leaf"]["vault"], resolved_pair[0].name) in row["elsewhere"]
    assert row["previous"].event_id == a.id  # the same reference was read before, unchanged
    assert "unchanged since" in detail.content.decode()


def test_changed_value_of_a_reference_is_marked(
    servers, auditor_client, requester, approver, make_document
):
    made = []
    for version in (1, None):  # version 1 holds the old value, the latest the new one
        document = make_document("API_KEY")
        document["Name"] += f"-{version or 'latest'}"
        leaf = {"vault": "secret/canary/rotating#value", "version": version}
        document["AuthParameters"]["ApiKeyAuthParameters"]["ApiKeyValue"] = leaf
        request = services.request_create(requester=requester, document=document)
        services.request_approve(
            request=request, approver=approver, seen_hash=request.document_hash
        )
        made.append(
            AuditEvent.objects.get(request_id=request.pk, action="connection.vault.resolve")
        )
    old, new = made
    response = auditor_client.get(
        reverse("audit_secret_uses"), {"reference": "secret/canary/rotating#value"}
    )
    rows = response.context["rows"]
    assert [r["event"].id for r in rows] == [new.id, old.id]
    assert [r["changed"] for r in rows] == [True, False]
    assert [r["uses"][0].version for r in rows] == [2, 1]
    assert 'data-testid="changed"' in response.content.decode()
    detail = _detail(auditor_client, new.id)
    row = next(s for s in detail.context["secrets"] if s["leaf"]["vault"].endswith("#value"))
    assert row["previous"].event_id == old.id
    assert "changed</strong> since" in detail.content.decode()


def test_secret_uses_pages_by_event(settings, auditor_client):
    _generate(settings, 600)
    fingerprint = (
        AuditSecretUse.objects.values_list("fingerprint", flat=True).order_by("fingerprint").first()
    )
    reference = AuditSecretUse.objects.order_by("-event_id").first().reference
    expected = sorted(
        set(AuditSecretUse.objects.filter(reference=reference).values_list("event_id", flat=True)),
        reverse=True,
    )
    rows, older = audit_review.secret_uses_page(reference=reference, size=2)
    seen = [r["event"].id for r in rows]
    while older:
        rows, older = audit_review.secret_uses_page(reference=reference, before=older, size=2)
        seen += [r["event"].id for r in rows]
    assert seen == expected
    assert audit_review.secret_uses_page(fingerprint=fingerprint)[0]


def test_reference_search_takes_the_form_request_pages_show(servers, auditor_client, resolved_pair):
    """`mount/path#key@version`, as copied from a request page: that version's reads only."""
    use = AuditSecretUse.objects.order_by("event_id").first()
    found = [
        [row["event"].id for row in rows]
        for rows, _ in (
            audit_review.secret_uses_page(reference=use.reference),
            audit_review.secret_uses_page(reference=use.reference, version=use.version),
            audit_review.secret_uses_page(reference=use.reference, version=use.version + 1),
        )
    ]
    assert use.event_id in found[0] and found[1] == found[0] and found[2] == []
    response = auditor_client.get(
        reverse("audit_secret_uses"), {"reference": f"{use.reference}@{use.version}"}
    )
    assert response.status_code == 200
    assert [row["event"].id for row in response.context["rows"]] == found[1]


def test_verify_checks_the_secret_use_index(servers, resolved_pair):
    assert audit.verify_secret_uses().ok
    call_command("verify_audit_chain", stdout=io.StringIO())
    first = AuditSecretUse.objects.order_by("event_id").first()
    for tamper in (
        lambda: AuditSecretUse.objects.filter(pk=first.pk).update(fingerprint="hmac-sha256:0"),
        lambda: AuditSecretUse.objects.filter(pk=first.pk).delete(),
        lambda: AuditSecretUse.objects.create(
            event_id=1, path="x", reference="s/x#y", version=1, fingerprint="hmac-sha256:0"
        ),
    ):
        saved = list(AuditSecretUse.objects.values())
        tamper()
        result = audit.verify_secret_uses()
        assert not result.ok and result.bad_event in (first.event_id, 1), result
        with pytest.raises(CommandError, match="secret-use index is wrong at event"):
            call_command("verify_audit_chain", stdout=io.StringIO())
        AuditSecretUse.objects.all().delete()
        AuditSecretUse.objects.bulk_create([AuditSecretUse(**row) for row in saved])
    assert audit.verify_secret_uses().ok


@pytest.mark.parametrize(
    ("params", "words"),
    [
        ({"fingerprint": "md5:abc"}, "hmac-sha256: and 64 hex digits"),
        ({"fingerprint": "hmac-sha256:" + "a" * 64, "reference": "s/x#y"}, "either a fingerprint"),
        ({"reference": "secret/x"}, "Add the key after"),
    ],
)
def test_secret_uses_bad_input(auditor_client, params, words):
    response = auditor_client.get(reverse("audit_secret_uses"), params)
    assert response.status_code == 400
    assert words in response.content.decode()


# ---------------------------------------------------------------------------
# Admin


def test_admin_audit_events_are_read_only_for_superusers(admin_client_, generated):
    event = generated[0]
    base = "/admin/connections_app/auditevent/"
    assert admin_client_.get(base).status_code == 200
    assert admin_client_.get(f"{base}?action=connection.vault.resolve").status_code == 200
    assert admin_client_.get(f"{base}{event.id}/change/").status_code == 200  # view only
    assert admin_client_.get(f"{base}add/").status_code == 403
    assert admin_client_.post(f"{base}add/", {"action": "x"}).status_code == 403
    assert admin_client_.post(f"{base}{event.id}/change/", {"action": "x"}).status_code == 403
    assert admin_client_.get(f"{base}{event.id}/delete/").status_code == 403
    assert admin_client_.post(f"{base}{event.id}/delete/", {"post": "yes"}).status_code == 403
    bulk = {"action": "delete_selected", "_selected_action": [event.id], "post": "yes"}
    admin_client_.post(base, bulk)
    assert AuditEvent.objects.count() == len(generated)
    assert AuditEvent.objects.get(id=event.id).hash == event.hash
    assert audit.verify_chain().ok


def test_admin_requests_are_viewable_not_editable(servers, admin_client_, requester, make_document):
    request = services.request_create(requester=requester, document=make_document())
    base = "/admin/connections_app/connectionrequest/"
    assert admin_client_.get(base).status_code == 200
    assert admin_client_.get(f"{base}{request.pk}/change/").status_code == 200
    assert admin_client_.get(f"{base}add/").status_code == 403
    assert admin_client_.post(f"{base}{request.pk}/change/", {"name": "x"}).status_code == 403
    assert admin_client_.post(f"{base}{request.pk}/delete/", {"post": "yes"}).status_code == 403


def test_admin_is_closed_to_auditors(auditor_client):
    response = auditor_client.get("/admin/connections_app/auditevent/")
    assert response.status_code == 302 and "/admin/login/" in response["Location"]


# ---------------------------------------------------------------------------
# The generator


def test_generator_refuses_without_debug(settings):
    settings.DEBUG = False
    with pytest.raises(CommandError, match="only with DEBUG on"):
        call_command("generate_audit_events", 10)
    assert AuditEvent.objects.count() == 0


def test_generator_continues_the_real_chain(servers, settings, resolved_pair):
    real = AuditEvent.objects.count()
    last = AuditEvent.objects.order_by("-id").first()
    _generate(settings, 250, "--days", "5")
    assert AuditEvent.objects.count() == real + 250
    first_generated = AuditEvent.objects.get(id=last.id + 1)
    assert first_generated.prev_hash == last.hash
    assert first_generated.created_at >= last.created_at
    result = audit.verify_chain()
    assert result.ok and result.checked == real + 250
    generated = AuditEvent.objects.filter(id__gt=last.id)
    assert len(set(generated.values_list("action", flat=True))) >= 8
    times = list(generated.order_by("id").values_list("created_at", flat=True))
    assert times == sorted(times)
    sizes = [len(d) for d in generated.values_list("data", flat=True)]
    assert 400 < sum(sizes) / len(sizes) < 2000  # about 1 KB rows with the other columns
    # Their fingerprints are indexed like real ones.
    with_fp = generated.filter(data__contains=audit.FINGERPRINT_PREFIX)
    expected = sum(len(audit.secret_uses(json.loads(e.data))) for e in with_fp)
    assert AuditSecretUse.objects.filter(event__in=generated).count() == expected > 0


def test_list_rows_show_utc_seconds_and_escape_values(auditor_client):
    from django.db import transaction

    with transaction.atomic():
        event = audit.append([{"action": "<b>odd</b>"}])[0]
    body = auditor_client.get(LIST).content.decode()
    assert f'<a href="/audit/{event.id}/">{event.id}</a>' in body
    assert f"<td>{event.created_at:%Y-%m-%d %H:%M:%S}</td>" in body
    assert "<code>&lt;b&gt;odd&lt;/b&gt;</code>" in body
