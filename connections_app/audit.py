"""The audit log's write-and-proof side: append hash-chained events, verify the chain, and
keep (and check) the index of secret uses. Signed checkpoints outside the database are
`checkpoints`; the auditors' read side is `audit_review`."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial

from django.db import connection, transaction
from django.db.models import CharField, F, Func, Max, TextField, Value
from django.db.models.functions import Cast
from django.utils import timezone

from .document import canonical_json, path_text, secret_leaves
from .models import AuditChainHead, AuditCheckpoint, AuditEvent, AuditSecretUse

GENESIS = "0" * 64
FINGERPRINT_PREFIX = "hmac-sha256:"


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
    connection=None,
    outcome: str = "success",
    arn: str = "",
    state: str = "",
    data: dict | None = None,
) -> AuditEvent:
    """Append one event; call inside the transaction that makes the change it records."""
    entry = dict(action=action, actor=actor, request=request, connection=connection)
    return append([dict(entry, outcome=outcome, arn=arn, state=state, data=data)])[0]


def append(entries: list[dict]) -> list[AuditEvent]:
    """Append events in order (each a dict of `record`'s arguments) under one lock of the head.

    An event about a request names the request's connection, if it has one; its ARN and
    state are the connection's as recorded in the same transaction; its data, their target."""
    if not connection.in_atomic_block:
        raise RuntimeError("audit.record must run inside the transaction it records")
    seq, prev = lock_head()
    now = timezone.now()
    rows, uses, labels = [], [], {}
    for entry in entries:
        actor, request = entry.get("actor"), entry.get("request")
        conn = entry.get("connection") or (request.connection if request is not None else None)
        actor_id = actor.pk if actor is not None and actor.is_authenticated else None
        seq += 1
        fields = {
            "id": seq,
            "created_at": now,
            "actor_id": actor_id,
            "actor_username": actor.get_username() if actor_id is not None else "system",
            "action": entry["action"],
            "request_id": request.pk if request is not None else None,
            "connection_name": request.name if request is not None else (conn.name if conn else ""),
            "outcome": entry.get("outcome") or "success",
            "arn": entry.get("arn") or (conn.arn if conn is not None else ""),
            "connection_state": entry.get("state") or (conn.state if conn is not None else ""),
            "data": _with_target(entry.get("data") or {}, request or conn, labels),
        }
        uses += [{"event_id": seq, **use} for use in secret_uses(fields["data"])]
        prev = seal(fields, prev)
        rows.append(fields)
    events = AuditEvent.objects.bulk_create(AuditEvent(**fields) for fields in rows)
    advance_head(seq, prev)
    AuditSecretUse.objects.bulk_create(AuditSecretUse(**use) for use in uses)
    # Signing calls Vault: never inside the transaction, and only when a checkpoint is due.
    transaction.on_commit(partial(_after_commit, seq))
    return events


def _with_target(data: dict, about, labels: dict) -> dict:
    """An event about a request or connection names its target (account and Region): names
    are unique per target only, and a filing has no ARN yet to tell them apart. `labels`:
    each target read once per append (a sweep appends many events of one target)."""
    target_id = getattr(about, "target_id", None)
    if target_id is None or "target" in data:
        return data
    if target_id not in labels:
        labels[target_id] = about.target.label
    return {**data, "target": labels[target_id]}


def _after_commit(seq: int) -> None:
    from . import checkpoints  # it builds on this module

    checkpoints.after_commit(seq)


def lock_head() -> tuple[int, str]:
    """Lock the head row (created on first use) and return the newest position and hash.
    Whoever appends holds it until commit, then moves it on with `advance_head`."""
    head = AuditChainHead.objects.select_for_update().filter(id=1).first()
    if head is None:
        AuditChainHead.objects.get_or_create(id=1)
        head = AuditChainHead.objects.select_for_update().get(id=1)
    return head.last_seq, head.last_hash


def advance_head(seq: int, last_hash: str) -> None:
    AuditChainHead.objects.filter(id=1).update(last_seq=seq, last_hash=last_hash)


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


class UtcIsoText(Func):
    """created_at as isoformat(timespec="microseconds") text of the UTC time (PostgreSQL).

    Reading timestamps through Django's timestamptz loader costs ~9 µs a row, more than
    hashing a whole event; text straight from the database costs almost nothing. Serves the
    `bench audit` figures verify_events_per_s and export_events_per_s.
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
        parts += [UtcIsoText(name) if name == "created_at" else F(name), tab]
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
    """Id ranges in pipeline mode: PostgreSQL builds the next chunk while Python hashes this one
    (psycopg's own connection, past Django's cursor: `bench audit` verify_events_per_s).

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
    *,
    after: int = 0,
    after_hash: str = GENESIS,
    up_to: int | None = None,
    chunk: int = 5000,
    signed: dict[int, tuple[str, str]] | None = None,
) -> ChainResult:
    """Recompute the hashes after position `after` (whose hash is `after_hash`) in order.

    With `up_to` None the chain must also end where the head says it does. `signed` maps the
    positions of signed checkpoints (read from outside the database) to (hash, signing time):
    the chain must pass through each, and reach the newest.
    """
    prev, expected = after_hash, after + 1
    # The database's own checkpoints: whoever rewrites the chain can rewrite these too.
    marks = dict(AuditCheckpoint.objects.filter(seq__gt=after).values_list("seq", "hash"))
    signed = signed or {}
    watched = marks.keys() | {seq for seq in signed if seq > after}
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
                if seq in watched and (reason := _mark_problem(seq, digest, marks, signed)):
                    # A chain rewritten with fresh hashes still differs from an older checkpoint.
                    return broken(seq, reason)
                prev = digest
                expected += 1
        last = expected - 1
        if up_to is None and (problem := _end_problem(last, prev, marks, signed)):
            return broken(*problem)
    return ChainResult(True, last - after, last_seq=last, last_hash=prev)


def _mark_problem(seq: int, digest: str, marks: dict, signed: dict) -> str | None:
    if seq in signed and signed[seq][0] != digest:
        below = max((s for s in signed if s < seq), default=0)
        return (
            f"its hash differs from the checkpoint signed at {signed[seq][1]}: the chain was "
            f"rewritten between events {below + 1} and {seq}, and every hash after the change "
            "recomputed"
        )
    if seq in marks and marks[seq] != digest:
        return "it differs from an earlier checkpoint"
    return None


def _end_problem(
    last: int, last_hash: str, marks: dict, signed: dict | None = None
) -> tuple[int, str] | None:
    """Does the chain end where the head, and every checkpoint, say it must?"""
    if signed and (top := max(signed)) > last:
        when = signed[top][1]
        if last == 0:
            return 1, (
                f"the log is empty, but the checkpoint signed at {when} recorded {top} events: "
                "it was emptied (truncated)"
            )
        return last + 1, (
            f"events {last + 1} to {top} are missing: the checkpoint signed at {when} recorded "
            f"event {top}, but the chain ends at {last} (its tail was cut off and the head "
            "rewound)"
        )
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


def verify_chain(
    *, up_to: int | None = None, chunk: int = 5000, signed: dict[int, tuple[str, str]] | None = None
) -> ChainResult:
    """Recompute every hash from the first event; name the first event that does not fit."""
    return verify_range(up_to=up_to, chunk=chunk, signed=signed)


def checkpoint_record(result: ChainResult) -> AuditCheckpoint | None:
    """Remember a verified position in the database, so event pages can start from there.

    Written when a checkpoint is signed; trusted by nothing but those pages."""
    if not result.ok or result.last_seq == 0:
        return None
    checkpoint, _ = AuditCheckpoint.objects.get_or_create(
        seq=result.last_seq, defaults={"hash": result.last_hash}
    )
    return checkpoint


def parsed(event: AuditEvent) -> dict:
    return json.loads(event.data)


# ---------------------------------------------------------------------------
# The secret-use index: derived from the events' data, checked against it


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
