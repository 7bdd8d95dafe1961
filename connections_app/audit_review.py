"""The audit log's read side, for auditors: filters, keyset pages, export, the event page's
review (fields, diff, secret uses) and a request's history. Writing and proving the log is
`audit`."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from django.db import connection, transaction
from django.db.models import CharField, Func, Q, QuerySet, Subquery

from .audit import COLUMNS, GENESIS, ChainResult, UtcIsoText, parsed, verify_range
from .document import flatten, is_reference
from .models import AuditCheckpoint, AuditEvent, AuditSecretUse

PAGE_SIZE = 50
# Actions the services write, offered as suggestions in the filter (any text is accepted).
ACTIONS = (
    "auth.oidc.sign_in",
    "auth.oidc.roles_changed",
    "auth.oidc.refused",
    "connection.request.create",
    "connection.request.edit",
    "connection.request.cancel",
    "connection.request.expire",
    "connection.request.reject",
    "connection.request.approve",
    "connection.request.retry",
    "connection.vault.resolve",
    *(
        f"connection.{kind}.{result}"
        for kind in ("create", "update", "rotate", "deauthorize", "delete")
        for result in ("success", "adopt", "failure")
    ),
    "connection.state.refresh",
    "connection.sweep",
    *(
        f"connection.sweep.{what}"
        for what in ("state", "changed_outside", "deleted_outside", "drift")
    ),
)
OUTCOMES = ("success", "failure", "warning", "approved", "rejected", "expired")
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


def text_filter(field: str, value: str, *, ranged: bool = True) -> Q:
    """Exact, or every value starting with `value` less its final "*". A prefix is a range on
    the (field, id) index ([prefix, prefix + U+10FFFF): the strings that start with it, in a
    code-point or byte collation) rechecked with LIKE, so that it stays right under any
    collation and still reads only the index range when PostgreSQL's collation is not "C"
    (where LIKE alone would scan the table). `ranged` False: LIKE alone, a filter on the rows
    that another condition's index finds."""
    if not value.endswith("*"):
        return Q(**{field: value})
    prefix = value.rstrip("*")
    if not prefix:
        return Q()
    if not ranged:
        return Q(**{f"{field}__startswith": prefix})
    return Q(
        **{
            f"{field}__gte": prefix,
            f"{field}__lt": prefix + "\U0010ffff",
            f"{field}__startswith": prefix,
        }
    )


# The text filters from the most to the least selective (in the audit bench's log: ARNs and
# connection names are many, actors fewer, actions and outcomes a handful).
_BY_SELECTIVITY = ("arn", "connection_name", "actor_username", "action", "outcome")


def cheap_to_count(filters: dict) -> bool:
    """One index range (or none) answers the count: at most one text filter (times only bound
    the id). Two or more: counting a thousand matches may walk far more rows than the page."""
    return sum(1 for field in _BY_SELECTIVITY if filters.get(field)) <= 1


@contextmanager
def planned_for_these_values(filters: dict):
    """Around the queries of a page filtered by a prefix and more: on PostgreSQL, plans made for
    the prefixes given, not the generic plan of a prepared statement (DATABASE_PREPARED_STATEMENTS),
    which cannot know how much of the log a range covers and may AND two bitmaps of half the log
    (audit bench, a prefix with a second filter: 108 ms instead of 6). Elsewhere, nothing."""
    prefixed = any(isinstance(v, str) and v.endswith("*") for v in filters.values())
    # A prefix alone is one index range, which the generic plan walks well.
    if not prefixed or cheap_to_count(filters) or connection.vendor != "postgresql":
        yield
        return
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL plan_cache_mode = force_custom_plan")
        yield


def _moment(value, *, end: bool) -> datetime:
    """A bound as an aware datetime; a date is the start of its day (with `end`, of the next)."""
    if isinstance(value, datetime):
        return value
    return datetime.combine(value + timedelta(days=1) if end else value, time.min, tzinfo=UTC)


def events_filtered(
    *, since: datetime | date | None = None, until: datetime | date | None = None, **exact: str
) -> QuerySet[AuditEvent]:
    """Events matching every given filter (text filters exact, or prefixes ending with "*");
    `since` is included, `until` is the first moment not included (a date: the whole day
    included, as the list's "To" says).

    A time range becomes an id range: each bound is one step down the created_at index, and then
    the (action, id) style indexes serve a filter combined with times, reading only one page.
    This relies on created_at following id, which append() gives by stamping events under the
    head's lock (with the clocks of several servers skewed, an event stamped out of order next
    to a bound would be counted with its neighbours).
    """
    qs = AuditEvent.objects.all()
    given = [field for field in _BY_SELECTIVITY if exact.get(field)]
    # Of several prefixes only the most selective is a range on its index (two broad ranges
    # make PostgreSQL AND two bitmaps of half the log); the others filter the rows found.
    prefixes = [field for field in given if exact[field].endswith("*")]
    for field in given:
        qs = qs.filter(text_filter(field, exact[field], ranged=field in prefixes[:1]))
    if since is not None:
        start = _moment(since, end=False)
        first = AuditEvent.objects.filter(created_at__gte=start).order_by("created_at", "id")
        qs = qs.filter(id__gte=Subquery(first.values("id")[:1]))
    if until is not None and not (type(until) is date and until >= date.max):
        end = _moment(until, end=True)  # (the last day there is: no upper bound)
        last = AuditEvent.objects.filter(created_at__lt=end).order_by("-created_at", "-id")
        qs = qs.filter(id__lte=Subquery(last.values("id")[:1]))
    return qs


COUNT_UP_TO = 1000


def count_up_to(qs: QuerySet[AuditEvent], limit: int = COUNT_UP_TO) -> tuple[int, bool]:
    """How many events match, counting at most `limit` + 1 (one index range, whatever the
    log's size): (count, more than `limit`)."""
    counted = qs.order_by()[: limit + 1].count()
    return min(counted, limit), counted > limit


def suggestions(filters: dict) -> list[dict]:
    """ "Did you mean": for each text filter given exactly, values that contain it, from the
    small tables (actions the app writes, users, connections, requests), never the log."""
    from django.contrib.auth import get_user_model

    from .models import Connection, ConnectionRequest

    sources = {
        "action": lambda text: [a for a in ACTIONS if text.lower() in a.lower()],
        "actor": lambda text: (
            get_user_model()
            .objects.filter(username__icontains=text)
            .order_by("username")
            .values_list("username", flat=True)[:8]
        ),
        "connection": lambda text: sorted(
            {
                *Connection.objects.filter(name__icontains=text).values_list("name", flat=True)[:8],
                *ConnectionRequest.objects.filter(name__icontains=text).values_list(
                    "name", flat=True
                )[:8],
            }
        ),
        "arn": lambda text: Connection.objects.filter(arn__icontains=text).values_list(
            "arn", flat=True
        )[:8],
    }
    out = []
    for name, find in sources.items():
        text = filters.get(name, "")
        if not text or text.endswith("*"):
            continue
        values = [value for value in find(text) if value != text][:8]
        out.append({"field": name, "text": text, "values": values})
    return out


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
        qs, columns[1] = qs.annotate(created_text=UtcIsoText("created_at")), "created_text"
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
    if not (is_reference(old) and is_reference(new)):
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
    return value if is_reference(value) else _shown(value)


def document_rows(document: dict) -> list[dict]:
    """The document as (path, value) rows; a secret leaf as its reference, never a value."""
    return [
        {"path": path, "secret": leaf if is_reference(leaf) else None, "value": _shown(leaf)}
        for path, leaf in flatten(document)
    ]


def change_rows(
    document: dict, changes: list[Change] | None, *, secrets_compared: bool = True
) -> list[dict]:
    """The document's rows, each marked with its change against a base (`changes`, from
    document_diff: added, changed, with the value before) and the base's removed fields last.
    Without a base (None), plain rows. `secrets_compared` False: the base had no secrets (what
    AWS describes), so secret rows are marked "secret" (compared elsewhere), not unchanged."""
    rows = document_rows(document)
    if changes is None:
        return rows
    by_path = {c.path: c for c in changes}
    for row in rows:
        change = by_path.get(row["path"])
        if change is None and row["secret"] and not secrets_compared:
            row["change"] = "secret"
            continue
        row["change"] = change.kind if change else "unchanged"
        if change is not None and change.kind == "changed":
            row["before"] = _for_page(change.old)
    rows += [
        {"path": c.path, "change": "removed", "before": _for_page(c.old), "value": ""}
        for c in changes
        if c.kind == "removed"
    ]
    return rows


def secret_summary(event: AuditEvent, document: dict) -> list[dict]:
    """Each secret leaf with, when it carries a fingerprint, the previous read of the same
    reference (did the value change?) and other places the same value was used."""
    rows = []
    for path, leaf in flatten(document):
        if not is_reference(leaf):
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
# A spreadsheet runs a cell starting with one of these as a formula (OWASP, CSV injection).
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _cell(value):
    if isinstance(value, str) and value.startswith(_FORMULA_STARTS):
        return f"'{value}"
    return value


def csv_lines(rows: list[tuple]) -> str:
    """Export rows as CSV lines; `data` is the stored JSON text, quoted the CSV way. A text
    cell a spreadsheet would run as a formula is prefixed with ' (JSON Lines stays exact)."""
    return "".join(_csv.writerow([_cell(value) for value in row]) for row in rows)


CSV_HEADER = csv_lines([EXPORT_COLUMNS])


def history(request_id: int) -> QuerySet[AuditEvent]:
    """A request's events in order, with what its page lists (not the documents)."""
    return (
        AuditEvent.objects.filter(request_id=request_id)
        .order_by("id")
        .only("id", "created_at", "action", "actor_username", "outcome")
    )
