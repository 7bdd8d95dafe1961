"""Append-only, hash-chained audit events, and keyed fingerprints of secret values."""

from __future__ import annotations

import csv
import hashlib
import hmac
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import CharField, F, Func, Max, QuerySet, Subquery, TextField, Value
from django.db.models.functions import Cast
from django.utils import timezone

from . import sql
from .models import AuditChainHead, AuditCheckpoint, AuditEvent, AuditSecretUse

GENESIS = "0" * 64


def fingerprint(value: str) -> str:
    """HMAC-SHA256 keyed by AUDIT_HMAC_KEY: shows a secret changed without revealing it."""
    digest = hmac.new(settings.AUDIT_HMAC_KEY.encode(), value.encode(), hashlib.sha256)
    return f"hmac-sha256:{digest.hexdigest()}"


def canonical_json(value) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _header(
    seq, created_at, actor_id, actor_username, action, request_id, name, outcome, arn, state
) -> str:
    # Columns are hashed through this fixed text form so that verifying needs no JSON work.
    return "\t".join(
        (
            str(seq),
            created_at.isoformat(timespec="microseconds"),
            "" if actor_id is None else str(actor_id),
            actor_username,
            action,
            "" if request_id is None else str(request_id),
            name,
            outcome,
            arn,
            state,
        )
    )


def _hash(prev_hash: str, header: str, data: str) -> str:
    return hashlib.sha256(f"{prev_hash}\n{header}\n{data}".encode()).hexdigest()


def record(
    *,
    action: str,
    actor=None,
    request=None,
    outcome: str = "success",
    arn: str = "",
    state: str = "",
    data: dict | None = None,
) -> AuditEvent:
    """Append one event; call inside the transaction that makes the change it records."""
    return append(
        [
            dict(
                action=action,
                actor=actor,
                request=request,
                outcome=outcome,
                arn=arn,
                state=state,
                data=data,
            )
        ]  # fmt: skip
    )[0]


def append(entries: list[dict]) -> list[AuditEvent]:
    """Append events in order (each a dict of `record`'s arguments) under one lock of the head."""
    if not connection.in_atomic_block:
        raise RuntimeError("audit.record must run inside the transaction it records")
    seq, prev = lock_head()
    now = timezone.now()
    rows, uses = [], []
    for entry in entries:
        actor, request = entry.get("actor"), entry.get("request")
        actor_id = actor.pk if actor is not None and actor.is_authenticated else None
        seq += 1
        fields = {
            "id": seq,
            "created_at": now,
            "actor_id": actor_id,
            "actor_username": actor.get_username() if actor_id is not None else "system",
            "action": entry["action"],
            "request_id": request.pk if request is not None else None,
            "connection_name": request.name if request is not None else "",
            "outcome": entry.get("outcome") or "success",
            "arn": entry.get("arn") or (request.connection_arn if request is not None else ""),
            "connection_state": entry.get("state")
            or (request.connection_state if request is not None else ""),
            "data": entry.get("data") or {},
        }
        uses += [{"event_id": seq, **use} for use in secret_uses(fields["data"])]
        prev = seal(fields, prev)
        rows.append(fields)
    # Plain SQL (connections_app.sql): this runs twice in every approval.
    sql.insert(AuditEvent, rows)
    advance_head(seq, prev)
    sql.insert(AuditSecretUse, uses)
    return [AuditEvent(**fields) for fields in rows]


def lock_head() -> tuple[int, str]:
    """Lock the head row (created on first use) and return the newest position and hash.
    Whoever appends holds it until commit, then moves it on with `advance_head`."""
    lock = " FOR UPDATE" if connection.features.has_select_for_update else ""
    query = f"SELECT last_seq, last_hash FROM {sql.table(AuditChainHead)} WHERE id = 1{lock}"  # noqa: S608
    rows, _ = sql.execute(query)
    if not rows:
        AuditChainHead.objects.get_or_create(id=1)
        rows, _ = sql.execute(query)
    return rows[0]


def advance_head(seq: int, last_hash: str) -> None:
    head = sql.table(AuditChainHead)
    sql.execute(f"UPDATE {head} SET last_seq = %s, last_hash = %s WHERE id = 1", [seq, last_hash])  # noqa: S608


def history(request_id: int) -> list[AuditEvent]:
    """A request's events in order, with what its page lists (not the documents)."""
    return sql.select(
        AuditEvent,
        fields=("id", "created_at", "action", "actor_username", "outcome"),
        order_by="id",
        request_id=request_id,
    )


def seal(fields: dict, prev_hash: str) -> str:
    """Complete an event's columns: data as canonical text, prev_hash and hash (returned)."""
    fields["data"] = canonical_json(fields["data"])
    fields["prev_hash"] = prev_hash
    fields["hash"] = _hash(prev_hash, header_of(fields), fields["data"])
    return fields["hash"]


def header_of(fields: dict) -> str:
    return _header(
        fields["id"],
        fields["created_at"],
        fields["actor_id"],
        fields["actor_username"],
        fields["action"],
        fields["request_id"],
        fields["connection_name"],
        fields["outcome"],
        fields["arn"],
        fields["connection_state"],
    )


# Every stored column, in the order the hash covers them (header columns, data, links).
COLUMNS = (
    "id",
    "created_at",
    "actor_id",
    "actor_username",
    "action",
    "request_id",
    "connection_name",
    "outcome",
    "arn",
    "connection_state",
    "data",
    "prev_hash",
    "hash",
)


@dataclass
class ChainResult:
    ok: bool
    checked: int
    bad_event: int | None = None
    reason: str = ""
    last_seq: int = 0  # when ok: the position and hash verified up to
    last_hash: str = ""


class _UtcIsoText(Func):
    """created_at as isoformat(timespec="microseconds") text of the UTC time (PostgreSQL).

    Reading timestamps through Django's timestamptz loader costs ~9 µs a row, more than
    hashing a whole event; text straight from the database costs almost nothing.
    """

    template = (
        """to_char(%(expressions)s AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"')"""
    )
    output_field = CharField()


def _pg_hashed_text() -> Func:
    """The text _hash(prev_hash, _header(...), data) hashes, built by PostgreSQL (concat() turns
    NULL into "" as _header does), so that verifying in Python is one SHA-256 per event."""
    # Typed separators: with server-side parameters PostgreSQL cannot guess a bare one's type.
    newline, tab = Cast(Value("\n"), TextField()), Cast(Value("\t"), TextField())
    parts = [F("prev_hash"), newline]
    for name in COLUMNS[:10]:
        parts += [_UtcIsoText(name) if name == "created_at" else F(name), tab]
    parts[-1] = newline
    return Func(*parts, F("data"), function="concat", output_field=TextField())


def _messages(after: int, up_to: int | None, chunk: int) -> Iterator[list[tuple]]:
    """(id, prev_hash, hash, hashed text) after `after` in id order, in chunks."""
    qs = AuditEvent.objects.order_by("id")
    if connection.vendor == "postgresql":
        yield from _pg_messages(qs, after, up_to, chunk)
        return
    qs = qs.values_list(*COLUMNS)
    if up_to is not None:
        qs = qs.filter(id__lte=up_to)
    while rows := list(qs.filter(id__gt=after)[:chunk]):
        yield [(r[0], r[11], r[12], f"{r[11]}\n{_header(*r[:10])}\n{r[10]}") for r in rows]
        after = rows[-1][0]


def _pg_messages(qs, after: int, up_to: int | None, chunk: int) -> Iterator[list[tuple]]:
    """Id ranges in pipeline mode: PostgreSQL builds the next chunk while Python hashes this one.

    Fixed ranges up to the highest id (ids are gap-free; a missing or extra row still shows in
    the caller's position check and the head check).
    """
    qs = qs.annotate(message=_pg_hashed_text()).values_list("id", "prev_hash", "hash", "message")
    if up_to is None:
        up_to = AuditEvent.objects.aggregate(top=Max("id"))["top"] or 0
    ranges = [(low, min(low + chunk, up_to)) for low in range(after, up_to, chunk)]
    connection.ensure_connection()
    raw = connection.connection  # psycopg's own: Django's cursors have no pipeline mode
    with raw.pipeline(), raw.cursor() as one, raw.cursor() as two:
        cursors = (one, two)

        def send(i):
            low, high = ranges[i]
            cursors[i % 2].execute(*qs.filter(id__gt=low, id__lte=high).query.sql_with_params())

        for i in range(min(2, len(ranges))):
            send(i)
        for i in range(len(ranges)):
            rows = cursors[i % 2].fetchall()
            if i + 2 < len(ranges):
                send(i + 2)  # queued behind the other cursor's chunk: the server never waits
            yield rows


def verify_range(
    *, after: int = 0, after_hash: str = GENESIS, up_to: int | None = None, chunk: int = 5000
) -> ChainResult:
    """Recompute the hashes after position `after` (whose hash is `after_hash`) in order.

    With `up_to` None the chain must also end where the head says it does.
    """
    prev, expected = after_hash, after + 1
    marks = dict(AuditCheckpoint.objects.filter(seq__gt=after).values_list("seq", "hash"))
    sha256 = hashlib.sha256

    def broken(seq, reason):
        return ChainResult(False, expected - after - 1, seq, reason)

    with transaction.atomic():
        if connection.vendor == "postgresql" and not _in_outer_transaction():
            # One snapshot for every chunk and the head, without a cursor held open.
            with connection.cursor() as cursor:
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        if after == 0:  # the walk below starts at id 1: a row below it would go unseen
            stray = AuditEvent.objects.filter(id__lt=1).order_by("id").values_list("id")[:1]
            if stray:
                return broken(stray[0][0], "it lies outside the chain (event ids start at 1)")
        for rows in _messages(after, up_to, chunk):
            for seq, prev_hash, digest, message in rows:
                if seq != expected:
                    return broken(seq, f"event {expected} is missing")
                if prev_hash != prev:
                    return broken(seq, "its previous-hash link is broken")
                if sha256(message.encode()).hexdigest() != digest:
                    return broken(seq, "its content does not match its hash")
                if seq in marks and marks[seq] != digest:
                    # A chain rewritten with fresh hashes still differs from an older checkpoint.
                    return broken(seq, "it differs from an earlier checkpoint")
                prev = digest
                expected += 1
        last = expected - 1
        if up_to is None and (problem := _end_problem(last, prev, marks)):
            return broken(*problem)
    return ChainResult(True, last - after, last_seq=last, last_hash=prev)


def _end_problem(last: int, last_hash: str, marks: dict) -> tuple[int, str] | None:
    """Does the chain end where the head, and every checkpoint, say it must?"""
    if marks and max(marks) > last:
        return last + 1, (
            f"a checkpoint recorded event {max(marks)}, but the chain ends at {last}: "
            "events were removed from its end"
        )
    head = AuditChainHead.objects.filter(id=1).first()
    if head is None:
        if last == 0:
            return None
        return last, "the chain's head record is missing"
    if head.last_seq > last:
        return last + 1, f"events {last + 1} to {head.last_seq} are missing from the chain's end"
    if head.last_seq < last:
        return head.last_seq + 1, (
            f"events {head.last_seq + 1} to {last} were added after the head, out of band"
        )
    if head.last_hash != last_hash:
        return last, "its hash differs from the one the chain's head records"
    return None


def _in_outer_transaction() -> bool:
    return len(connection.atomic_blocks) > 1


def verify_chain(*, up_to: int | None = None, chunk: int = 5000) -> ChainResult:
    """Recompute every hash from the first event; name the first event that does not fit."""
    return verify_range(up_to=up_to, chunk=chunk)


def checkpoint_record(result: ChainResult) -> AuditCheckpoint | None:
    """Remember how far a full verification reached, so event pages can start from there."""
    if not result.ok or result.last_seq == 0:
        return None
    checkpoint, _ = AuditCheckpoint.objects.get_or_create(
        seq=result.last_seq, defaults={"hash": result.last_hash}
    )
    return checkpoint


def parsed(event: AuditEvent) -> dict:
    return json.loads(event.data)


# ---------------------------------------------------------------------------
# Review: filters, keyset pages, export, diff and fingerprint correlation

PAGE_SIZE = 50
FINGERPRINT_PREFIX = "hmac-sha256:"
# Actions the services write, offered as suggestions in the filter (any text is accepted).
ACTIONS = (
    "connection.request.create",
    "connection.request.edit",
    "connection.request.cancel",
    "connection.request.expire",
    "connection.request.reject",
    "connection.request.approve",
    "connection.request.retry",
    "connection.vault.resolve",
    "connection.create.success",
    "connection.create.adopt",
    "connection.create.failure",
    "connection.state.refresh",
)
OUTCOMES = ("success", "failure", "approved", "rejected", "expired")
DOCUMENT_ACTIONS = (
    "connection.request.create",
    "connection.request.edit",
    "connection.vault.resolve",
)
_EXACT_FILTERS = ("actor_username", "action", "connection_name", "outcome", "arn")
_LIST_COLUMNS = (
    "id",
    "when",
    "actor_username",
    "action",
    "connection_name",
    "outcome",
    "arn",
    "connection_state",
)
EXPORT_COLUMNS = (*COLUMNS[:10], "prev_hash", "hash", "data")  # data last: readable exports


def events_filtered(
    *, since: date | None = None, until: date | None = None, **exact: str
) -> QuerySet[AuditEvent]:
    """Events matching every given filter; `since`/`until` are whole UTC days, both included.

    A day range becomes an id range: each bound is one step down the created_at index, and then
    the (action, id) style indexes serve a filter combined with dates, reading only one page.
    This relies on created_at following id, which append() gives by stamping events under the
    head's lock (with the clocks of several servers skewed, an event stamped out of order next
    to midnight would be counted with its neighbours).
    """
    qs = AuditEvent.objects.all()
    for field in _EXACT_FILTERS:
        if exact.get(field):
            qs = qs.filter(**{field: exact[field]})
    if since is not None:
        start = datetime.combine(since, time.min, tzinfo=UTC)
        first = AuditEvent.objects.filter(created_at__gte=start).order_by("created_at", "id")
        qs = qs.filter(id__gte=Subquery(first.values("id")[:1]))
    if until is not None and until < date.max:  # the last day there is: no upper bound
        end = datetime.combine(until + timedelta(days=1), time.min, tzinfo=UTC)
        last = AuditEvent.objects.filter(created_at__lt=end).order_by("-created_at", "-id")
        qs = qs.filter(id__lte=Subquery(last.values("id")[:1]))
    return qs


class _UtcSecondsText(Func):
    """created_at as "YYYY-MM-DD HH:MM:SS" UTC text for the list: no timestamp parsing."""

    template = "to_char(%(expressions)s AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS')"
    output_field = CharField()

    def as_sqlite(self, compiler, connection, **extra):
        # %%%% is one % after the template and the parameter substitution.
        extra["template"] = "strftime('%%%%Y-%%%%m-%%%%d %%%%H:%%%%M:%%%%S', %(expressions)s)"
        return self.as_sql(compiler, connection, **extra)


@dataclass
class Page:
    events: list[tuple]  # named rows of _LIST_COLUMNS
    newer: int | None  # cursor for ?after=, when newer events may exist
    older: int | None  # cursor for ?before=, when older events exist


def page_of(
    qs: QuerySet[AuditEvent],
    *,
    before: int | None = None,
    after: int | None = None,
    size: int = PAGE_SIZE,
) -> Page:
    """One page, newest first, by keyset on id: the same cost at any depth, and no COUNT."""
    qs = qs.annotate(when=_UtcSecondsText("created_at")).values_list(*_LIST_COLUMNS, named=True)
    if after is not None:
        rows = list(qs.filter(id__gt=after).order_by("id")[: size + 1])
        more = len(rows) > size
        rows = rows[:size][::-1]
        return Page(rows, rows[0].id if more else None, rows[-1].id if rows else None)
    if before is not None:
        qs = qs.filter(id__lt=before)
    rows = list(qs.order_by("-id")[: size + 1])
    more = len(rows) > size
    rows = rows[:size]
    newer = rows[0].id if rows and before is not None else None
    return Page(rows, newer, rows[-1].id if more else None)


def export_chunks(
    qs: QuerySet[AuditEvent], *, first: int = 200, chunk: int = 5000
) -> Iterator[list[tuple]]:
    """EXPORT_COLUMNS rows (created_at as hashed text), newest first, in keyset chunks.

    Each chunk is one short query on an index range: memory stays flat, the first rows come at
    once, and no transaction or server-side cursor stays open while the client downloads. The
    log is append-only and the walk goes down from the newest id, so the chunks join up exactly.
    The first chunk is small so that the first line goes out quickly.
    """
    pg = connection.vendor == "postgresql"
    columns = list(EXPORT_COLUMNS)
    if pg:
        qs, columns[1] = qs.annotate(created_text=_UtcIsoText("created_at")), "created_text"
    qs = qs.order_by("-id").values_list(*columns)
    part, size = qs, first
    while rows := list(part[:size]):
        yield (
            rows if pg else [(r[0], r[1].isoformat(timespec="microseconds"), *r[2:]) for r in rows]
        )
        if len(rows) < size:
            return
        part, size = qs.filter(id__lt=rows[-1][0]), chunk


_json_str = json.encoder.encode_basestring  # json.dumps of one string, without the overhead


def jsonl_lines(rows: list[tuple]) -> str:
    """One JSON object per event: the stored columns, `data` spliced in as stored."""
    out = []
    for seq, created, actor_id, user, action, req, name, outcome, arn, state, prev, h, data in rows:
        out.append(
            f'{{"id":{seq},"created_at":"{created}",'
            f'"actor_id":{"null" if actor_id is None else actor_id},'
            f'"actor_username":{_json_str(user)},"action":{_json_str(action)},'
            f'"request_id":{"null" if req is None else req},'
            f'"connection_name":{_json_str(name)},"outcome":{_json_str(outcome)},'
            f'"arn":{_json_str(arn)},"connection_state":{_json_str(state)},'
            f'"prev_hash":"{prev}","hash":"{h}","data":{data}}}\n'
        )
    return "".join(out)


def verify_up_to(event: AuditEvent, *, limit: int | None) -> tuple[ChainResult | None, dict]:
    """Verify now from the nearest checkpoint at or below `event` (or the first event) up to it,
    unless more than `limit` events lie between: then None, and the page offers to.

    Also names the nearest checkpoint at or above the event: that full verification already
    covered it."""
    checkpoints = AuditCheckpoint.objects.order_by("seq")
    below = checkpoints.filter(seq__lte=event.id).last()
    above = checkpoints.filter(seq__gte=event.id).first()
    start = {
        "seq": below.seq if below else 0,
        "at": below.created_at if below else None,
        "distance": event.id - (below.seq if below else 0),
        "covered_by": above,
    }
    if below is not None and below.seq == event.id:
        # The checkpoint vouches for the stored hash; the event's content must still match it.
        return verify_range(after=event.id - 1, after_hash=event.prev_hash, up_to=event.id), start
    if limit is not None and start["distance"] > limit:
        return None, start
    after_hash = below.hash if below else GENESIS
    return verify_range(after=start["seq"], after_hash=after_hash, up_to=event.id), start


def previous_document_event(event: AuditEvent) -> AuditEvent | None:
    """The newest earlier event of the same request that carries a document."""
    if event.request_id is None:
        return None
    return (
        AuditEvent.objects.filter(
            request_id=event.request_id, id__lt=event.id, action__in=DOCUMENT_ACTIONS
        )
        .order_by("-id")
        .first()
    )


def is_secret_leaf(value) -> bool:
    return isinstance(value, dict) and "vault" in value


def flatten(node, path: str = "") -> Iterator[tuple[str, object]]:
    """(path, leaf) pairs of a document; a redacted secret leaf counts as one leaf."""
    if isinstance(node, dict) and not is_secret_leaf(node):
        for key in sorted(node):
            yield from flatten(node[key], f"{path}.{key}" if path else key)
    elif isinstance(node, list):
        for i, item in enumerate(node):
            yield from flatten(item, f"{path}[{i}]")
    else:
        yield path, node


@dataclass
class Change:
    path: str
    kind: str  # added, removed, changed
    old: object = None
    new: object = None


def document_diff(old: dict, new: dict) -> list[Change]:
    """Paths added, removed or changed between two (redacted) documents."""
    before, after = dict(flatten(old)), dict(flatten(new))
    changes = []
    for path in sorted(before.keys() | after.keys()):
        if path not in before:
            changes.append(Change(path, "added", new=after[path]))
        elif path not in after:
            changes.append(Change(path, "removed", old=before[path]))
        elif not _same_leaf(before[path], after[path]):
            changes.append(Change(path, "changed", before[path], after[path]))
    return changes


def _same_leaf(old, new) -> bool:
    """Equal values. Secret leaves: the same reference, version and fingerprint, except that a
    request and the read that followed it (version 3, fingerprint) are the same document when
    the request asked for the latest version or for version 3."""
    if not (is_secret_leaf(old) and is_secret_leaf(new)):
        return old == new
    if old["vault"] != new["vault"]:
        return False
    old_read, new_read = bool(old.get("fingerprint")), bool(new.get("fingerprint"))
    if old_read == new_read:  # two requests, or two reads
        return (old.get("version"), old.get("fingerprint")) == (
            new.get("version"),
            new.get("fingerprint"),
        )
    asked, read = (new, old) if old_read else (old, new)
    return asked.get("version") in (None, read.get("version"))


def secret_leaves(document) -> list[tuple[tuple, dict]]:
    """(path, leaf) for every secret leaf of a document (a reference, redacted or not), in a
    stable order. Only dicts and lists are walked into: verifying the index runs this per
    event. (document.secret_leaves; here because document imports this module.)"""
    found = []

    def walk(node, path):
        if isinstance(node, dict):
            if is_secret_leaf(node):
                found.append((path, node))
                return
            items = [(key, node[key]) for key in sorted(node)]
        else:
            items = enumerate(node)
        for key, value in items:
            if isinstance(value, dict | list):
                walk(value, (*path, key))

    walk(document, ())
    return found


def path_text(path: tuple) -> str:
    """("A", "B", 0, "C") -> "A.B[0].C", as flatten() writes paths."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


def secret_uses(data: dict) -> list[dict]:
    """Every fingerprinted secret leaf of an event's document, as AuditSecretUse fields."""
    document = data.get("document")
    if not isinstance(document, dict):
        return []
    return [
        {
            "path": path_text(path),
            "reference": leaf["vault"],
            "version": leaf.get("version"),
            "fingerprint": leaf["fingerprint"],
        }
        for path, leaf in secret_leaves(document)
        if leaf.get("fingerprint")
    ]


_USE_FIELDS = ("path", "reference", "version", "fingerprint")


def verify_secret_uses(chunk: int = 5000) -> ChainResult:
    """The secret-use index against the events' data it is derived from: the data is hashed,
    the index is not, so a row removed, altered or added there shows only here. Both are read
    in event order and merged."""
    # Canonical JSON has no spaces: every event with a fingerprinted leaf contains this.
    # Up to the newest event now: an event and its index rows commit together, so both reads
    # see the same events below that bound, whatever is appended meanwhile.
    top = AuditEvent.objects.aggregate(top=Max("id"))["top"] or 0
    marked = AuditEvent.objects.filter(
        id__lte=top, data__contains=f'"fingerprint":"{FINGERPRINT_PREFIX}'
    )
    events = marked.order_by("id").values_list("id", "data").iterator(chunk_size=chunk)
    uses = AuditSecretUse.objects.filter(event_id__lte=top).order_by("event_id")
    uses = uses.values_list("event_id", *_USE_FIELDS).iterator(chunk_size=chunk)
    pending, checked = next(uses, None), 0
    for event_id, data in events:
        stored = []
        while pending is not None and pending[0] <= event_id:
            if pending[0] < event_id:
                return ChainResult(False, checked, pending[0], "index rows name no such secret")
            stored.append(pending[1:])
            pending = next(uses, None)
        expected = [tuple(use[f] for f in _USE_FIELDS) for use in secret_uses(json.loads(data))]
        if sorted(stored, key=repr) != sorted(expected, key=repr):
            return ChainResult(False, checked, event_id, "its secret-use index rows differ")
        checked += 1
    if pending is not None:
        return ChainResult(False, checked, pending[0], "index rows name no such secret")
    return ChainResult(True, checked)


def secret_uses_page(
    *,
    fingerprint: str = "",
    reference: str = "",
    version: int | None = None,
    before: int | None = None,
    size: int = 50,
) -> tuple[list[dict], int | None]:
    """Events using one fingerprint (where a value was reused) or one reference (when its value
    changed; with `version`, only where that version was read), newest first by keyset on the
    event id, each with its matching secret leaves and whether the fingerprint differs from the
    next older row's."""
    uses = AuditSecretUse.objects.filter(
        **({"fingerprint": fingerprint} if fingerprint else {"reference": reference})
    )
    if version is not None and not fingerprint:
        uses = uses.filter(version=version)
    ids = uses.order_by("-event_id").values_list("event_id", flat=True).distinct()
    if before is not None:
        ids = ids.filter(event_id__lt=before)
    ids = list(ids[: size + 1])  # one more, to compare the last row with
    by_event: dict[int, list[AuditSecretUse]] = {i: [] for i in ids}
    for use in uses.filter(event_id__in=ids).order_by("path"):
        by_event[use.event_id].append(use)
    events = AuditEvent.objects.filter(id__in=ids[:size]).defer("data").in_bulk()
    rows = []
    for i, event_id in enumerate(ids[:size]):
        older = by_event[ids[i + 1]][0].fingerprint if i + 1 < len(ids) else None
        mine = by_event[event_id][0].fingerprint
        changed = older is not None and older != mine
        if event_id in events:  # the index is derived; an event missing here shows nothing
            rows.append({"event": events[event_id], "uses": by_event[event_id], "changed": changed})
    return rows, (ids[size - 1] if len(ids) > size else None)


# ---------------------------------------------------------------------------
# The event page

# Events verified on page load at most (about 0.1 s); farther from a checkpoint, on demand.
VERIFY_ON_PAGE = 10_000
REUSE_SAMPLE = 200  # newest uses of a fingerprint looked at for the reuse summary


def _shown(value) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _for_page(value):
    return value if is_secret_leaf(value) else _shown(value)


def document_rows(document: dict) -> list[dict]:
    """The document as (path, value) rows; a secret leaf as its reference, never a value."""
    return [
        {"path": path, "secret": leaf if is_secret_leaf(leaf) else None, "value": _shown(leaf)}
        for path, leaf in flatten(document)
    ]


def secret_summary(event: AuditEvent, document: dict) -> list[dict]:
    """Each secret leaf with, when it carries a fingerprint, the previous read of the same
    reference (did the value change?) and other places the same value was used."""
    rows = []
    for path, leaf in flatten(document):
        if not is_secret_leaf(leaf):
            continue
        row = {"path": path, "leaf": leaf, "previous": None, "elsewhere": []}
        fp = leaf.get("fingerprint")
        if fp:
            row["previous"] = (
                AuditSecretUse.objects.filter(reference=leaf["vault"], event_id__lt=event.id)
                .order_by("-event_id")
                .first()
            )
            others = (
                AuditSecretUse.objects.filter(fingerprint=fp)
                .exclude(event_id=event.id)
                .order_by("-event_id")
                .values_list("reference", "event__connection_name")[:REUSE_SAMPLE]
            )
            own = (leaf["vault"], event.connection_name)
            row["elsewhere"] = [pair for pair in dict.fromkeys(others) if pair != own]
        rows.append(row)
    return rows


def event_review(event: AuditEvent, *, verify_all: bool = False) -> dict:
    """Everything the event page shows beyond the event's own columns."""
    data = parsed(event)
    document = data.get("document")
    previous = previous_document_event(event) if isinstance(document, dict) else None
    changes = None
    if previous is not None:
        changes = [
            Change(c.path, c.kind, _for_page(c.old), _for_page(c.new))
            for c in document_diff(parsed(previous).get("document") or {}, document)
        ]
    chain, chain_start = verify_up_to(event, limit=None if verify_all else VERIFY_ON_PAGE)
    return {
        "data": data,
        "details": {key: _shown(value) for key, value in data.items() if key != "document"},
        "document_rows": document_rows(document) if isinstance(document, dict) else [],
        "secrets": secret_summary(event, document) if isinstance(document, dict) else [],
        "previous": previous,
        "changes": changes,
        "chain": chain,
        "chain_start": chain_start,
    }


class _Echo:
    """A file for csv.writer that hands back each line instead of storing it."""

    def write(self, line: str) -> str:
        return line


_csv = csv.writer(_Echo())


def csv_lines(rows: list[tuple]) -> str:
    """Export rows as CSV lines; `data` is the stored JSON text, quoted the CSV way."""
    return "".join(_csv.writerow(row) for row in rows)


CSV_HEADER = csv_lines([EXPORT_COLUMNS])
