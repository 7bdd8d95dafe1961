"""The read side of requests and connections: what pages list. Nothing here writes."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, replace

from django.core.cache import cache
from django.db.models import F, Q, QuerySet
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver
from django.utils import timezone

from . import audit_review, eventbridge, vault
from . import document as doc
from .models import AuditEvent, Connection, ConnectionRequest, Sweep, Target
from .roles import CAN_APPROVE, CAN_AUDIT, CAN_REQUEST, group_ids
from .services.scopes import endpoint_host, host_allowed, host_is_new, scope_for, scopes_of

R = ConnectionRequest
QUEUE_PAGE_SIZE = 25  # rows cost a page most of its time


def visible_request(user, pk: int) -> ConnectionRequest | None:
    """Requesters see their own requests; approvers, auditors and superusers see all."""
    found = (
        R.objects.select_related("requester", "decided_by", "connection", "target")
        .filter(pk=pk)
        .first()
    )
    if found is not None and (
        found.requester_id == user.pk or user.has_perm(CAN_APPROVE) or user.has_perm(CAN_AUDIT)
    ):
        return found
    return None


def requests_of(user) -> QuerySet[ConnectionRequest]:
    return (
        R.objects.filter(requester=user)
        .select_related("connection", "target")
        .order_by("-created_at")
    )


@dataclass
class QueuePage:
    rows: list[dict]
    waiting: int  # pending and not yet past their time, in all
    newer: int | None  # cursor for ?after=, when more wait after this page
    paged: bool  # this is not the first page


def approval_queue(
    *, user, after: int | None, target: int | None = None, size: int = QUEUE_PAGE_SIZE
) -> QueuePage:
    """Pending requests not past their time, oldest first, a page at a time.

    Pages follow the last request shown (?after=id), not a position: deciding requests on one
    page shrinks the queue, and a page number would then skip the ones it moved up. Rows as
    plain values: approvers reload this page all day."""
    waiting = R.objects.filter(status=R.PENDING, expires_at__gt=timezone.now())
    if not user.is_superuser:  # targets whose approvers are limited to groups the user is not in
        waiting = waiting.filter(
            Q(target__approver_groups__isnull=True) | Q(target__approver_groups__in=group_ids(user))
        ).distinct()
    if target is not None:
        waiting = waiting.filter(target_id=target)
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
        ).annotate(requester_name=F("requester__username"), target_name=F("target__name"))[
            : size + 1
        ]
    )
    return QueuePage(
        rows=rows[:size],
        waiting=waiting.count(),
        newer=rows[size - 1]["pk"] if len(rows) > size else None,
        paged=anchor is not None,
    )


def unfinished_submissions(user, target: int | None = None) -> QuerySet[ConnectionRequest]:
    """Failed submissions, and ones still running (or left running by a lost response), of
    the targets the user may approve (of one of them, with `target`)."""
    rows = R.objects.filter(status__in=(R.FAILED, R.SUBMITTING))
    if target is not None:
        rows = rows.filter(target_id=target)
    if not user.is_superuser:
        rows = rows.filter(
            Q(target__approver_groups__isnull=True) | Q(target__approver_groups__in=group_ids(user))
        ).distinct()
    return rows.select_related("target").only(
        "kind", "name", "status", "error_message", "target__name"
    )


# ---------------------------------------------------------------------------
# Connections


def may_see_connections(user) -> bool:
    return any(user.has_perm(p) for p in (CAN_REQUEST, CAN_APPROVE, CAN_AUDIT))


CONNECTIONS_PAGE_SIZE = 50
STATES = ("AUTHORIZED", "AUTHORIZING", "CREATING", "UPDATING", "DEAUTHORIZING", "DEAUTHORIZED",
          "DELETING", "DELETED")  # fmt: skip
LIVE = ~Q(state=Connection.DELETED)
# The list's filters, by the name the page and the home page's links use.
STATE_FILTERS = {
    "live": LIVE,
    "passing": Q(state__in=Connection.PASSING),
    "deauthorized_by_aws": Q(deauthorized_by_aws=True),
    "unmanaged": LIVE & Q(managed=False),
    "changed_outside": LIVE & Q(changed_outside=True),
    "deleted_outside": Q(deleted_outside=True),
    "drifted": LIVE & ~Q(drift=[]),
    **{state: Q(state=state) for state in STATES},
}
FILTER_LABELS = {
    "live": "not deleted",
    "passing": "changing (passing state)",
    "deauthorized_by_aws": "deauthorized by AWS",
    "unmanaged": "unmanaged (found by a sweep)",
    "changed_outside": "changed outside this dashboard",
    "deleted_outside": "deleted outside this dashboard",
    "drifted": "Vault holds newer secrets",
}


@dataclass
class ConnectionsPage:
    rows: list[Connection]
    after: str | None  # cursor for the next page: "name id"


def connections_page(
    *,
    state: str = "",
    prefix: str = "",
    target: int | None = None,
    after: tuple[str, int] | None = None,
) -> ConnectionsPage:
    """Connections by name, a keyset page at a time (the same cost at any depth, no COUNT)."""
    rows = Connection.objects.order_by("name", "id").select_related("target")
    if state in STATE_FILTERS:
        rows = rows.filter(STATE_FILTERS[state])
    if target is not None:
        rows = rows.filter(target_id=target)
    if prefix:
        rows = rows.filter(name__startswith=prefix)
    if after is not None:
        name, pk = after
        # name >= the cursor's first: an index range to start from (the OR alone is none).
        rows = rows.filter(name__gte=name).filter(Q(name__gt=name) | Q(id__gt=pk))
    rows = list(
        rows.only(
            "name", "arn", "authorization_type", "state", "state_reason", "modified_at",
            "checked_at", "deauthorized_by_aws", "managed", "changed_outside", "deleted_outside",
            "drift", "target__name",
        )[: CONNECTIONS_PAGE_SIZE + 1]
    )  # fmt: skip
    more = len(rows) > CONNECTIONS_PAGE_SIZE
    rows = rows[:CONNECTIONS_PAGE_SIZE]
    return ConnectionsPage(rows, f"{rows[-1].name} {rows[-1].pk}" if more else None)


def fleet(user) -> dict:
    """The home page: per target and overall, connections by state, open changes, flags and
    the last sweep; a handful of grouped queries whatever the fleet's size."""
    from django.db.models import Count, OuterRef, Subquery

    latest = Sweep.objects.filter(target=OuterRef("pk")).order_by("-finished_at")
    targets = list(
        Target.objects.order_by("name").annotate(
            swept_at=Subquery(latest.values("finished_at")[:1]),
            swept_ok=Subquery(latest.values("ok")[:1]),
            swept_error=Subquery(latest.values("error")[:1]),
        )
    )
    rows = {t.pk: {"target": t, "states": {}, "flags": {}, "changes": {}} for t in targets}
    total = {"states": defaultdict(int), "flags": defaultdict(int), "changes": defaultdict(int)}
    # States and flags in one pass over the connections.
    counts = Connection.objects.values("target_id", "state").annotate(
        n=Count("id"), **{name: Count("id", filter=STATE_FILTERS[name]) for name in FLAGS}
    )
    for row in counts:
        mine = rows[row["target_id"]]
        mine["states"][row["state"]] = row["n"]
        total["states"][row["state"]] += row["n"]
        for name in FLAGS:
            mine["flags"][name] = mine["flags"].get(name, 0) + row[name]
            total["flags"][name] += row[name]
    open_ = ConnectionRequest.objects.filter(
        Q(status=R.PENDING, expires_at__gt=timezone.now()) | Q(status=R.FAILED)
    )
    for row in open_.values("target_id", "status").annotate(n=Count("id")):
        rows[row["target_id"]]["changes"][row["status"]] = row["n"]
        total["changes"][row["status"]] += row["n"]
    # Only the states some connection is in: the table stays narrow enough to read.
    shown = [state for state in STATES if total["states"][state]] or ["AUTHORIZED"]
    return {"targets": list(rows.values()), "total": total, "states": shown, "flags": FLAGS}


FLAGS = ("unmanaged", "changed_outside", "deleted_outside", "drifted", "deauthorized_by_aws")


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


def adoption_document(connection: Connection) -> dict:
    """What AWS holds of a connection nobody manages here, as a document without secrets
    (AWS never returns them): the starting point of its adoption."""
    try:
        found = eventbridge.describe_connection(connection.target, connection.name)
    except eventbridge.EventBridgeError:
        found = None
    return doc.comparable(found) if found else {"Name": connection.name}


def rotation_candidates(connection: Connection) -> list[dict]:
    """Each secret of the connection: the version pushed, and the newest Vault has now (or
    why it cannot be read)."""
    pushed = doc.references(connection.document)
    latest = {path: replace(ref, version=None) for path, ref in pushed}
    answers = vault.check_all(list(dict.fromkeys(latest.values())))
    out = []
    for path, ref in pushed:
        answer = answers[latest[path]]
        failed = isinstance(answer, vault.VaultError)
        out.append(
            {
                "path": doc.path_text(path),
                "reference": ref.secret,
                "pushed": ref.version,
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
    scopes = scopes_of(request.requester)
    host = endpoint_host(request.document)
    review["host"] = host and {
        "name": host,
        "new": host_is_new(host),
        "allowed": host_allowed(request.document, request.requester),
    }
    pushed = {}
    if request.connection is not None:
        pushed = {path: leaf for path, leaf in doc.secret_leaves(request.connection.document)}
    refs = doc.references(request.document)
    answers = vault.check_all(list(dict.fromkeys(ref for _, ref in refs)), digest=doc.fingerprint)
    for path, ref in refs:
        before = pushed.get(path)
        answer = answers[ref]
        row = {"path": doc.path_text(path), "ref": ref, "reference": str(ref), "before": before}
        row["scope"] = scope_for(ref, scopes)
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


def change_base(request: ConnectionRequest, review: dict | None) -> tuple[list | None, str, bool]:
    """What a change's document is shown against: (changes, what it is, secrets compared).

    An update or rotation: against what AWS holds now (the decider's review asked it), or else
    against what was last pushed (no AWS call for a page anyone may open). A create edited
    since it was filed: against its previous revision. Otherwise nothing (None)."""
    new = doc.redact(request.document)
    if request.kind in (R.UPDATE, R.ROTATE):
        if review is not None and review.get("diff") is not None:
            return review["diff"], "what AWS holds now", False
        if request.connection is not None and request.connection.document:
            pushed = request.connection.document
            return audit_review.document_diff(pushed, new), "what was last pushed", True
        return None, "", True
    if request.revision > 1:
        previous = (
            request.revisions.filter(number=request.revision - 1).values_list("document", flat=True)
        ).first()
        if previous is not None:
            label = f"revision {request.revision - 1}"
            return audit_review.document_diff(doc.redact(previous), new), label, True
    return None, "", True


def deciders(request: ConnectionRequest) -> str:
    """Who may decide a change, as the decision panel says it."""
    groups = sorted(request.target.approver_groups.values_list("name", flat=True))
    who = request.requester.get_username()
    if groups:
        return (
            f"Approvers in {', '.join(groups)} (the approver groups of target "
            f"{request.target.name}), except the requester ({who})."
        )
    return f"Any approver except the requester ({who})."


TARGET_CHOICES = "target-choices"


def target_choices() -> list[tuple[int, str]]:
    """(pk, name) of every target, for the lists' filters: kept a minute per process (targets
    change seldom), so that a list page costs no query for it."""
    choices = cache.get(TARGET_CHOICES)
    if choices is None:
        choices = list(Target.objects.order_by("name").values_list("pk", "name"))
        cache.set(TARGET_CHOICES, choices, 60)
    return choices


@receiver(post_save, sender=Target)
@receiver(post_delete, sender=Target)
def _targets_changed(**kwargs) -> None:
    cache.delete(TARGET_CHOICES)  # this process shows the change at once, others within 60 s


def approvals_waiting(user) -> int:
    """Pending changes, not past their time, that `user` may decide: not their own, on targets
    with no approver groups or one of theirs. One query (the menu shows it on every page)."""
    waiting = R.objects.filter(status=R.PENDING, expires_at__gt=timezone.now()).exclude(
        requester_id=user.pk
    )
    if not user.is_superuser:
        mine = Q(approver_groups=None) | Q(approver_groups__user=user)
        waiting = waiting.filter(target_id__in=Target.objects.filter(mine).values("pk"))
    return waiting.count()


def requests_referencing(*, references: list[str] = (), prefix: str = "", limit: int = 50):
    """Requests of any status whose document names one of `references` (mount/path#key) or a
    path under `prefix`, newest first, at most `limit`: what the secret-use search lists beside
    the reads. Documents are searched as text (the requests table, not the audit log)."""
    from django.db.models import TextField
    from django.db.models.functions import Cast

    needles = [f'"{ref}"' for ref in references]
    if prefix:
        needles.append(f'"{prefix}')
    if not needles:
        return []
    text = Q()
    for needle in needles:
        text |= Q(document_text__contains=needle)
    rows = (
        R.objects.annotate(document_text=Cast("document", TextField()))
        .filter(text)
        .select_related("requester", "target")
        .order_by("-id")
    )
    return list(rows[:limit])


# ---------------------------------------------------------------------------
# Notifications


def notifications_of(user, *, size: int = 100) -> dict:
    """The user's newest notifications, their groups' chat posts, and what they muted."""
    from .models import Notification, NotificationMute

    rows = Notification.objects.filter(
        Q(recipient=user) | Q(group__in=group_ids(user))
    ).select_related("group")
    return {
        "rows": list(rows.order_by("-created_at", "-id")[:size]),
        "email_muted": NotificationMute.objects.filter(
            user=user, channel=Notification.EMAIL
        ).exists(),
        "has_email": bool(user.email),
    }
