"""Filing and deciding changes short of the AWS call: file, edit, cancel, reject, expire."""

from __future__ import annotations

import hashlib
import time

from django.conf import settings
from django.core.cache import cache
from django.db import IntegrityError, transaction
from django.utils import timezone

from .. import audit, eventbridge, notify, vault
from .. import document as doc
from ..models import Connection, ConnectionRequest, DocumentRevision, Target
from ..roles import CAN_REQUEST
from .policy import ActionRefused, change_refusal, refusal
from .scopes import out_of_scope, scope_for, scope_problems, scopes_of

R = ConnectionRequest
MAX_TEXT = 2000  # characters of an approval comment, a rejection or a deauthorize reason


class DocumentInvalid(Exception):
    def __init__(self, issues: list[doc.Issue]):
        super().__init__(f"{len(issues)} problem(s) in the request")
        self.issues = issues


def locked(request: ConnectionRequest, actor, action: str, apply=None) -> ConnectionRequest:
    """One transaction: lock the row, record its expiry if due, then refuse or `apply(row)`.

    A refusal is raised after the commit, so it never undoes the recorded expiry; `apply` runs
    only when nothing was recorded yet, so whatever it raises rolls back only its own work."""
    with transaction.atomic():
        row = R.objects.select_for_update().get(pk=request.pk)
        _expire_if_due(row)
        refused = refusal(action, row, actor)
        if refused is None and apply is not None:
            apply(row)
    if refused is not None:
        raise refused
    return row


def _expire_if_due(request: ConnectionRequest) -> bool:
    """Inside a transaction holding the row: a pending request past its time fails closed."""
    if not request.overdue:
        return False
    request.status = R.EXPIRED
    request.save(update_fields=["status", "updated_at"])
    event = audit.record(
        action="connection.request.expire",
        request=request,
        outcome="expired",
        data={"expired_at": request.expires_at.isoformat()},
    )
    notify.change_result(request, event)
    return True


def requests_expire_due() -> int:
    """Record the expiry of every pending request past its time; returns how many."""
    count = 0
    due = R.objects.filter(status=R.PENDING, expires_at__lte=timezone.now())
    for pk in list(due.values_list("pk", flat=True)):
        with transaction.atomic():
            count += _expire_if_due(R.objects.select_for_update().get(pk=pk))
    return count


def clean_text(text: str, *, what: str) -> str:
    text = (text or "").strip()
    if len(text) > MAX_TEXT:
        raise ActionRefused(
            f"The {what} may be at most {MAX_TEXT:,} characters (it has {len(text):,}).",
            code="too_long",
        )
    if "\x00" in text:
        raise ActionRefused(f"The {what} may not contain NUL characters.", code="null_character")
    return text


def change_hash(kind: str, document: dict, reason: str = "") -> str:
    """What an approval is bound to: the document (references included) and, for every kind
    but create, the kind and the reason too."""
    if kind == R.CREATE:
        return doc.document_hash(document)
    envelope = {"kind": kind, "document": document, "reason": reason}
    return hashlib.sha256(doc.canonical_json(envelope).encode()).hexdigest()


# ---------------------------------------------------------------------------
# Checks before a document is accepted


def reference_checks(refs: list[vault.Reference], *, user=None):
    """Does each reference resolve with the app's token? Never the value. With `user` (the
    Check button): a reference outside their scopes is answered so without asking Vault, and
    the checks run on Vault capacity of their own, apart from approvals."""
    refs = list(dict.fromkeys(refs))
    if user is None:
        return vault.check_all(refs)
    _charge_checks(user, len(refs))
    scopes = scopes_of(user)
    outside = {ref: out_of_scope(ref) for ref in refs if scope_for(ref, scopes) is None}
    inside = [ref for ref in refs if ref not in outside]
    return {**outside, **vault.check_all(inside, requester_check=True)}


def _charge_checks(user, count: int) -> None:
    """A per-user budget of Checks a minute (CHECKS_PER_MINUTE), counted in the cache."""
    key = f"vault-checks:{user.pk}:{int(time.time() // 60)}"
    cache.add(key, 0, timeout=120)
    if cache.incr(key, count) > settings.CHECKS_PER_MINUTE:
        raise ActionRefused(
            f"Too many Vault checks: at most {settings.CHECKS_PER_MINUTE} a minute. Try again "
            "in a minute.",
            code="check_rate",
        )


def document_problems(
    document: dict,
    *,
    target: Target,
    requester,
    exclude: ConnectionRequest | None = None,
    connection: Connection | None = None,
) -> list[doc.Issue]:
    """Model validation first: only a document valid on its own costs AWS and Vault calls, and
    only references inside the requester's scopes are looked up in Vault. `connection`: the
    document is an update of it (its name is fixed). Names are unique per target."""
    issues = doc.validate(document)
    if issues:  # hostile or broken input is refused without calling anyone
        return issues
    issues = scope_problems(document, requester)
    if issues:  # nobody learns from Vault whether another team's secret exists
        return issues
    name = document["Name"]
    if connection is not None:
        if name != connection.name:
            issues.append(doc.Issue("Name", "name_fixed", "A connection's name cannot change."))
    else:
        if (exclude is None or exclude.name != name) and _exists_in_aws(target, name):
            issues.append(
                doc.Issue(
                    "Name", "name_exists_in_aws", "A connection with this name exists in AWS."
                )
            )
        if _name_taken(target, name, exclude):
            issues.append(NAME_TAKEN)
    refs = doc.references(document)
    checked = reference_checks([ref for _, ref in refs])  # one Vault read per secret version
    for path, ref in refs:
        if isinstance(checked[ref], vault.VaultError):
            issues.append(doc.Issue(doc.path_text(path), checked[ref].code, checked[ref].message))
    return issues


NAME_TAKEN = doc.Issue("Name", "name_taken", "Another request or connection here uses this name.")


def _name_taken(target: Target, name: str, exclude: ConnectionRequest | None) -> bool:
    taken = R.objects.filter(R.HOLDS_NAME, target=target, name=name)
    if exclude is not None:
        taken = taken.exclude(pk=exclude.pk)
    live = Connection.objects.filter(target=target, name=name).exclude(state="DELETED")
    return taken.exists() or live.exists()


def _exists_in_aws(target: Target, name: str) -> bool:
    try:
        return eventbridge.describe_connection(target, name) is not None
    except eventbridge.EventBridgeError:
        return False  # AWS did not answer: the approval's create call is the final word


# ---------------------------------------------------------------------------
# Requester actions


def _save(request: ConnectionRequest, *, author) -> None:
    """Save the request and keep its document as a numbered revision."""
    # The database enforces the unique and constraint checks: the live-name one and the one
    # open change per connection are caught here.
    request.full_clean(
        exclude=["requester", "connection"], validate_unique=False, validate_constraints=False
    )
    try:
        with transaction.atomic():
            request.save()
    except IntegrityError:  # another request took the name, or the connection, since the check
        if request.connection_id is None:
            raise DocumentInvalid([NAME_TAKEN]) from None
        raise ActionRefused(
            "Another change to this connection was filed meanwhile.", code="open_change"
        ) from None
    DocumentRevision.objects.create(
        request=request,
        number=request.revision,
        document=request.document,
        document_hash=request.document_hash,
        author=author,
    )


def _filed(request: ConnectionRequest, requester, replaces=None) -> ConnectionRequest:
    with transaction.atomic():
        _expire_blockers(request)
        _save(request, author=requester)
        data = {"kind": request.kind, "document_hash": request.document_hash}
        if replaces is not None:
            data["replaces"] = replaces.pk
        if request.kind in R.DOCUMENT_KINDS:
            data["document"] = doc.redact(request.document)
        if request.reason:
            data["reason"] = request.reason
        event = audit.record(
            action="connection.request.create", actor=requester, request=request, data=data
        )
        notify.change_waiting(request, event)
    return request


def _expire_blockers(request: ConnectionRequest) -> None:
    """A pending request past its time that still holds this one's connection (or name)
    fails closed first: pages already show it expired, so filing must not trip over it."""
    due = R.objects.select_for_update().filter(status=R.PENDING, expires_at__lte=timezone.now())
    if request.connection_id is not None:
        due = due.filter(connection_id=request.connection_id)
    else:
        due = due.filter(R.HOLDS_NAME, target=request.target, name=request.name)
    for row in due:
        _expire_if_due(row)


def request_create(*, requester, document: dict, target: Target | None = None) -> ConnectionRequest:
    """File a request for a new connection in a target (default: the app's own)."""
    if not requester.has_perm(CAN_REQUEST):
        raise ActionRefused("You may not request connections.", code="not_requester")
    target = target or Target.default()
    issues = document_problems(document, target=target, requester=requester)
    if issues:
        raise DocumentInvalid(issues)
    request = R(
        kind=R.CREATE,
        target=target,
        name=document["Name"],
        authorization_type=document["AuthorizationType"],
        requester=requester,
        document=document,
        document_hash=change_hash(R.CREATE, document),
        expires_at=timezone.now() + settings.REQUEST_TTL,
    )
    return _filed(request, requester)


def open_change(
    connection: Connection, *, but: ConnectionRequest | None = None
) -> ConnectionRequest | None:
    """The connection's open change; `but`: the failed one being filed again does not count."""
    found = connection.changes.filter(status__in=R.OPEN_STATUSES).order_by("-id").first()
    if found is None or found.overdue or (but is not None and found.pk == but.pk):
        return None
    return found


def change_file(
    *,
    connection: Connection,
    requester,
    kind: str,
    document: dict | None = None,
    reason: str = "",
    replaces: ConnectionRequest | None = None,
) -> ConnectionRequest:
    """File a change to a connection: update or rotate (a whole document), deauthorize (with a
    reason) or delete. Re-authorize and adopt are filed as updates. `replaces`: the filer's
    own failed change to this connection, which this one files again (it is cancelled)."""
    if replaces is not None:
        refuse_unless_replaceable(replaces, requester, connection)
    opened = open_change(connection, but=replaces)
    refused = change_refusal(kind, connection, requester, open_change=opened)
    if refused is not None:
        raise refused
    kind = R.UPDATE if kind in ("reauthorize", "adopt") else kind
    reason = clean_text(reason, what="reason")
    if kind in (R.UPDATE, R.ROTATE):
        issues = document_problems(
            document, target=connection.target, requester=requester, connection=connection
        )
        if issues:
            raise DocumentInvalid(issues)
    else:
        if kind == R.DEAUTHORIZE and not reason:
            raise ActionRefused(
                "Say why the credentials are being removed.", code="reason_required"
            )
        if kind == R.DELETE:
            refuse_if_in_use(connection)
        document = {"Name": connection.name}
    request = R(
        kind=kind,
        target=connection.target,
        connection=connection,
        name=connection.name,
        authorization_type=document.get("AuthorizationType", connection.authorization_type),
        requester=requester,
        document=document,
        document_hash=change_hash(kind, document, reason),
        reason=reason,
        expires_at=timezone.now() + settings.REQUEST_TTL,
    )
    if replaces is not None and replaces.status == R.FAILED:
        request_cancel(request=replaces, actor=requester)
    return _filed(request, requester, replaces)


def refuse_unless_replaceable(replaced: ConnectionRequest, user, connection: Connection) -> None:
    """Only the requester's own failed (or since closed) change to this same connection is
    filed again in its place."""
    if (
        replaced.connection_id != connection.pk
        or replaced.requester_id != user.pk
        or replaced.status not in (R.FAILED, R.CANCELLED, R.REJECTED, R.EXPIRED)
    ):
        raise ActionRefused(
            f"Request #{replaced.pk} is not a failed change of yours to this connection.",
            code="not_replaceable",
        )


def refuse_if_in_use(connection: Connection) -> None:
    """AWS deletes a connection that API destinations still use; this product does not."""
    using = eventbridge.api_destinations(connection.target, connection.arn)
    if using:
        names = ", ".join(d["Name"] for d in using)
        raise ActionRefused(
            f"API destinations still use this connection: {names}. Point them at another "
            "connection (or delete them) first. Step Functions tasks that use the connection "
            "cannot be seen from here: check them yourself.",
            code="in_use",
        )


def rotation_document(
    connection: Connection, versions: dict[str, int | None], *, user=None
) -> dict:
    """The connection's pushed document with each secret at a chosen version (`versions` by
    path; None or absent: the newest version Vault has now). With `user`, as their Check:
    their scopes and their budget."""
    document = doc.unredacted(connection.document)
    refs = doc.references(document)
    newest = reference_checks([vault.Reference(r.path, r.key) for _, r in refs], user=user)
    for path, ref in refs:
        chosen = versions.get(doc.path_text(path))
        if chosen is None:
            latest = newest[vault.Reference(ref.path, ref.key)]
            if isinstance(latest, vault.VaultError):
                raise DocumentInvalid([doc.Issue(doc.path_text(path), latest.code, latest.message)])
            chosen = latest.version
        doc.replace(document, path, vault.Reference(ref.path, ref.key, chosen).leaf)
    return document


def request_update(*, request: ConnectionRequest, editor, document: dict) -> ConnectionRequest:
    """Edit a pending or failed create or update request's document. A failed one goes back to
    pending, for a new approval of the new revision."""
    # Refused before any Vault or AWS call; a failed create that made its connection after all
    # is not edited (Retry adopts it).
    refuse_if_made(locked(request, editor, "edit"))
    issues = document_problems(
        document,
        target=request.target,
        requester=editor,
        exclude=request,
        connection=request.connection,
    )
    if issues:
        raise DocumentInvalid(issues)
    new_hash = change_hash(request.kind, document)

    def apply(row: ConnectionRequest) -> None:
        failed = row.status == R.FAILED
        if new_hash == row.document_hash and not failed:
            return
        if failed:  # decided again from the start, by whoever approves the new revision
            row.status = R.PENDING
            row.expires_at = timezone.now() + settings.REQUEST_TTL
            row.decided_by = row.decided_at = row.submit_started_at = None
            row.decision_comment = row.error_code = row.error_message = ""
            # A new document is a new submission: nothing of the failed attempts to reconcile
            # (a failed create that made its connection was refused above).
            row.submit_attempts = 0
        previous = row.document_hash
        row.document = document
        row.document_hash = new_hash
        row.name = document["Name"]
        row.authorization_type = document["AuthorizationType"]
        row.revision += 1
        row.approved_hash = ""  # any approval was bound to the old document
        _save(row, author=editor)
        data = {
            "document": doc.redact(document),
            "document_hash": new_hash,
            "previous_hash": previous,
            "revision": row.revision,
        }
        if failed:
            data["previous_status"] = R.FAILED
        event = audit.record(action="connection.request.edit", actor=editor, request=row, data=data)
        notify.change_waiting(row, event)

    return locked(request, editor, "edit", apply)


def request_cancel(*, request: ConnectionRequest, actor) -> ConnectionRequest:
    checked = locked(request, actor, "cancel")
    refuse_if_made(checked)

    def apply(row: ConnectionRequest) -> None:
        _unchanged_since(row, checked)
        row.status = R.CANCELLED
        row.save(update_fields=["status", "updated_at"])
        audit.record(action="connection.request.cancel", actor=actor, request=row)

    return locked(request, actor, "cancel", apply)


def _unchanged_since(row: ConnectionRequest, checked: ConnectionRequest) -> None:
    """Between the check of AWS and the lock, the request moved on (it failed, say): look
    again rather than close what AWS may hold."""
    if row.status != checked.status:
        raise ActionRefused(
            "The request changed meanwhile; open it again before closing it.", code="changed"
        )


def refuse_if_made(request: ConnectionRequest) -> None:
    """A failed create may have made the connection after all (a timeout, a lost answer):
    closing the request would leave it untracked. Retry adopts it instead."""
    if request.status != R.FAILED or request.kind != R.CREATE:
        return
    try:
        found = eventbridge.describe_connection(request.target, request.name)
    except eventbridge.EventBridgeError as exc:
        raise ActionRefused(
            f"AWS could not be asked whether this request's connection exists ({exc.message}); "
            "try again.",
            code="aws_unknown",
        ) from None
    if found is not None and request.marker in (found.get("Description") or ""):
        raise ActionRefused(
            "This request's connection exists in AWS after all: Retry adopts it.",
            code="connection_exists",
        )


def request_reject(*, request: ConnectionRequest, approver, reason: str) -> ConnectionRequest:
    reason = clean_text(reason, what="reason")
    if not reason:
        raise ActionRefused("A rejection needs a reason.", code="reason_required")
    checked = locked(request, approver, "reject")
    refuse_if_made(checked)

    def apply(row: ConnectionRequest) -> None:
        _unchanged_since(row, checked)
        row.status = R.REJECTED
        row.decided_by = approver
        row.decided_at = timezone.now()
        row.decision_comment = reason
        row.save()
        event = audit.record(
            action="connection.request.reject",
            actor=approver,
            request=row,
            outcome="rejected",
            data={"reason": reason, "document_hash": row.document_hash},
        )
        notify.change_result(row, event)

    return locked(request, approver, "reject", apply)


def notifications_mute(*, user, email: bool) -> None:
    """Mute (or unmute) the email channel for oneself."""
    from ..models import Notification, NotificationMute

    if email:
        NotificationMute.objects.get_or_create(user=user, channel=Notification.EMAIL)
    else:
        NotificationMute.objects.filter(user=user, channel=Notification.EMAIL).delete()
