"""The read side of requests and connections: what pages list. Nothing here writes."""

from __future__ import annotations

from dataclasses import dataclass

from django.db.models import F, Q, QuerySet
from django.utils import timezone

from . import audit_review, eventbridge, vault
from . import document as doc
from .models import AuditEvent, Connection, ConnectionRequest
from .roles import CAN_APPROVE, CAN_AUDIT, CAN_REQUEST

R = ConnectionRequest
QUEUE_PAGE_SIZE = 25  # rows cost a page most of its time


def visible_request(user, pk: int) -> ConnectionRequest | None:
    """Requesters see their own requests; approvers, auditors and superusers see all."""
    found = R.objects.select_related("requester", "decided_by", "connection").filter(pk=pk).first()
    if found is not None and (
        found.requester_id == user.pk or user.has_perm(CAN_APPROVE) or user.has_perm(CAN_AUDIT)
    ):
        return found
    return None


def requests_of(user) -> QuerySet[ConnectionRequest]:
    return R.objects.filter(requester=user).select_related("connection").order_by("-created_at")


@dataclass
class QueuePage:
    rows: list[dict]
    waiting: int  # pending and not yet past their time, in all
    newer: int | None  # cursor for ?after=, when more wait after this page
    paged: bool  # this is not the first page


def approval_queue(*, after: int | None, size: int = QUEUE_PAGE_SIZE) -> QueuePage:
    """Pending requests not past their time, oldest first, a page at a time.

    Pages follow the last request shown (?after=id), not a position: deciding requests on one
    page shrinks the queue, and a page number would then skip the ones it moved up. Rows as
    plain values: approvers reload this page all day."""
    waiting = R.objects.filter(status=R.PENDING, expires_at__gt=timezone.now())
    waiting = waiting.order_by("created_at", "id")
    pending = waiting
    anchor = None
    if after is not None:
        anchor = R.objects.filter(pk=after).values_list("created_at", flat=True).first()
    if anchor is not None:
        pending = pending.filter(Q(created_at__gt=anchor) | Q(created_at=anchor, id__gt=after))
    rows = list(
        pending.values(
            "pk", "kind", "name", "authorization_type", "created_at", "expires_at", "requester_id"
        ).annotate(requester_name=F("requester__username"))[: size + 1]
    )
    return QueuePage(
        rows=rows[:size],
        waiting=waiting.count(),
        newer=rows[size - 1]["pk"] if len(rows) > size else None,
        paged=anchor is not None,
    )


def unfinished_submissions() -> QuerySet[ConnectionRequest]:
    """Failed submissions, and ones still running (or left running by a lost response)."""
    return R.objects.filter(status__in=(R.FAILED, R.SUBMITTING)).only(
        "kind", "name", "status", "error_message"
    )


# ---------------------------------------------------------------------------
# Connections


def may_see_connections(user) -> bool:
    return any(user.has_perm(p) for p in (CAN_REQUEST, CAN_APPROVE, CAN_AUDIT))


CONNECTIONS_PAGE_SIZE = 50
STATE_FILTERS = {
    "live": ~Q(state=Connection.DELETED),
    "passing": Q(state__in=Connection.PASSING),
    "deauthorized_by_aws": Q(deauthorized_by_aws=True),
    **{
        state: Q(state=state)
        for state in ("AUTHORIZED", "AUTHORIZING", "DEAUTHORIZED", "UPDATING", "DELETED")
    },
}


@dataclass
class ConnectionsPage:
    rows: list[Connection]
    after: str | None  # cursor for the next page: "name id"


def connections_page(
    *, state: str = "", prefix: str = "", after: tuple[str, int] | None = None
) -> ConnectionsPage:
    """Connections by name, a keyset page at a time (the same cost at any depth, no COUNT)."""
    rows = Connection.objects.order_by("name", "id")
    if state in STATE_FILTERS:
        rows = rows.filter(STATE_FILTERS[state])
    if prefix:
        rows = rows.filter(name__startswith=prefix)
    if after is not None:
        name, pk = after
        rows = rows.filter(Q(name__gt=name) | Q(name=name, id__gt=pk))
    rows = list(
        rows.only(
            "name", "arn", "authorization_type", "state", "state_reason", "modified_at",
            "checked_at", "deauthorized_by_aws",
        )[: CONNECTIONS_PAGE_SIZE + 1]
    )  # fmt: skip
    more = len(rows) > CONNECTIONS_PAGE_SIZE
    rows = rows[:CONNECTIONS_PAGE_SIZE]
    return ConnectionsPage(rows, f"{rows[-1].name} {rows[-1].pk}" if more else None)


def connection_history(connection: Connection) -> dict:
    """Its changes, newest first, and its audit events in order (those of its changes, and
    those about its ARN: state refreshes)."""
    changes = list(connection.changes.select_related("requester").order_by("-id"))
    events = (
        AuditEvent.objects.filter(Q(request_id__in=[c.pk for c in changes]) | Q(arn=connection.arn))
        .order_by("id")
        .only("id", "created_at", "action", "actor_username", "outcome", "connection_state")
    )
    return {"changes": changes, "events": events}


def api_destinations(connection: Connection) -> tuple[list[dict], str]:
    """The API destinations using a connection now, or the error AWS gave."""
    if connection.gone:
        return [], ""
    try:
        return eventbridge.api_destinations(connection.target, connection.arn), ""
    except eventbridge.EventBridgeError as exc:
        return [], exc.message


def pushed_secrets(connection: Connection) -> list[dict]:
    """The secrets a connection holds: reference, the version pushed and its fingerprint."""
    return [
        {"path": doc.path_text(path), "leaf": leaf}
        for path, leaf in doc.secret_leaves(connection.document)
    ]


def rotation_candidates(connection: Connection) -> list[dict]:
    """Each secret of the connection: the version pushed, and the newest Vault has now (or
    why it cannot be read)."""
    leaves = doc.secret_leaves(connection.document)
    latest = {
        path: vault.Reference.from_leaf({"vault": leaf["vault"], "version": None})
        for path, leaf in leaves
    }
    answers = vault.check_all(list(dict.fromkeys(latest.values())))
    out = []
    for path, leaf in leaves:
        answer = answers[latest[path]]
        failed = isinstance(answer, vault.VaultError)
        out.append(
            {
                "path": doc.path_text(path),
                "reference": leaf["vault"],
                "pushed": leaf.get("version"),
                "newest": None if failed else answer.version,
                "kv_version": None if failed else answer.kv_version,
                "error": answer.message if failed else "",
            }
        )
    return out


# ---------------------------------------------------------------------------
# The approver's review of a change


def change_review(request: ConnectionRequest) -> dict:
    """What a decider sees: each secret against what the connection holds (unchanged, new
    reference, new version; fingerprints, never values) and whether it resolves now; for an
    update or rotation, the plain fields against what AWS holds now; for a delete, the API
    destinations using the connection."""
    review: dict = {"secrets": [], "diff": None, "aws_error": "", "destinations": None}
    pushed = {}
    if request.connection is not None:
        pushed = {path: leaf for path, leaf in doc.secret_leaves(request.connection.document)}
    refs = doc.references(request.document)
    answers = vault.check_all(list(dict.fromkeys(ref for _, ref in refs)), digest=doc.fingerprint)
    for path, ref in refs:
        before = pushed.get(path)
        answer = answers[ref]
        row = {"path": doc.path_text(path), "reference": str(ref), "before": before}
        row["check"] = answer
        row["change"] = _secret_change(before, ref, answer)
        review["secrets"].append(row)
    new_paths = {path for path, _ in refs}
    review["removed"] = [
        {"path": doc.path_text(path), "before": leaf}
        for path, leaf in pushed.items()
        if path not in new_paths and request.kind in (R.UPDATE, R.ROTATE)
    ]
    if request.kind in (R.UPDATE, R.ROTATE):
        try:
            found = eventbridge.describe_connection(request.target, request.name)
        except eventbridge.EventBridgeError as exc:
            review["aws_error"] = exc.message
        else:
            now = doc.comparable(found) if found else {}
            review["diff"] = audit_review.document_diff(now, doc.comparable(request.document))
    if request.kind == R.DELETE and request.connection is not None:
        review["destinations"], review["aws_error"] = api_destinations(request.connection)
    return review


def _secret_change(before: dict | None, ref: vault.Reference, answer) -> dict:
    """added / new reference / new version / unchanged, the versions (the one pushed, and the
    one the reference names or resolves to now), and whether the value changed."""
    now = ref.version if ref.version is not None else getattr(answer, "version", None)
    if before is None:
        kind = "added"
    elif before["vault"] != ref.secret:
        kind = "new reference"
    elif before.get("version") != now:
        kind = "new version"
    else:
        kind = "unchanged"
    fingerprint = getattr(answer, "fingerprint", "")
    value = None
    if before is not None and before.get("fingerprint") and fingerprint:
        value = "unchanged" if before["fingerprint"] == fingerprint else "changed"
    return {
        "kind": kind,
        "from_version": before.get("version") if before else None,
        "to_version": now,
        "value": value,
        "fingerprint": fingerprint,
    }
