"""The workflow: every change to a request, and the audit event that records it, happens here."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.db import IntegrityError, transaction
from django.utils import timezone
from django.views.decorators.debug import sensitive_variables

from . import audit, eventbridge, vault
from . import document as doc
from .models import ConnectionRequest, DocumentRevision
from .roles import CAN_APPROVE, CAN_REQUEST

log = logging.getLogger(__name__)
R = ConnectionRequest


class ActionRefused(PermissionDenied):
    """A workflow action that may not happen now; `code` is stable for tests and templates."""

    def __init__(self, message: str, *, code: str):
        super().__init__(message)
        self.message = message
        self.code = code


class DocumentInvalid(Exception):
    def __init__(self, issues: list[doc.Issue]):
        super().__init__(f"{len(issues)} problem(s) in the request")
        self.issues = issues


# ---------------------------------------------------------------------------
# What may this user do with this request now


ACTIONS = ("edit", "cancel", "approve", "reject", "retry")
# A pending request can be withdrawn or turned down; so can a failed one nobody will retry.
CLOSABLE = (R.PENDING, R.FAILED)


def refusal(action: str, request: ConnectionRequest, user) -> ActionRefused | None:
    """Why `user` may not take `action` on `request` now, or None when they may: the services
    refuse with this, and pages offer exactly the actions it allows."""
    owner = user.pk == request.requester_id
    if action in ("edit", "cancel"):
        if not owner:
            return ActionRefused(f"Only the requester may {action} a request.", code="not_owner")
    elif not user.has_perm(CAN_APPROVE):
        return ActionRefused("You may not approve or reject requests.", code="not_approver")
    elif owner:
        return ActionRefused(
            "You filed this request: another approver must decide it.", code="own_request"
        )
    if request.shown_status == R.EXPIRED:
        return ActionRefused(
            "This request expired before it was decided; the requester must file it again.",
            code="expired",
        )
    if action == "retry":
        if not request.retryable:
            return ActionRefused(_busy_message(request), code="not_retryable")
    elif action in ("cancel", "reject"):
        if request.status not in CLOSABLE:
            done = "cancelled" if action == "cancel" else "rejected"
            return ActionRefused(
                f"Only a pending or failed request can be {done}.", code="not_pending"
            )
    elif request.status != R.PENDING:
        if action == "edit":
            return ActionRefused("Only a pending request can be edited.", code="not_pending")
        return ActionRefused(_busy_message(request), code="not_pending")
    return None


def allowed_actions(request: ConnectionRequest, user) -> set[str]:
    return {action for action in ACTIONS if refusal(action, request, user) is None}


def _busy_message(request: ConnectionRequest) -> str:
    return {
        R.SUBMITTING: "This request is already being submitted.",
        R.CREATED: "This request's connection has already been created.",
        R.FAILED: "This request failed; use Retry.",
    }.get(request.status, f"This request is {request.get_status_display().lower()}.")


def _locked(request: ConnectionRequest, actor, action: str, apply=None) -> ConnectionRequest:
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
    audit.record(
        action="connection.request.expire",
        request=request,
        outcome="expired",
        data={"expired_at": request.expires_at.isoformat()},
    )
    return True


def requests_expire_due() -> int:
    """Record the expiry of every pending request past its time; returns how many."""
    count = 0
    due = R.objects.filter(status=R.PENDING, expires_at__lte=timezone.now())
    for pk in list(due.values_list("pk", flat=True)):
        with transaction.atomic():
            count += _expire_if_due(R.objects.select_for_update().get(pk=pk))
    return count


MAX_TEXT = 2000  # characters of an approval comment or a rejection reason


def _clean_text(text: str, *, what: str) -> str:
    text = (text or "").strip()
    if len(text) > MAX_TEXT:
        raise ActionRefused(
            f"The {what} may be at most {MAX_TEXT:,} characters (it has {len(text):,}).",
            code="too_long",
        )
    if "\x00" in text:
        raise ActionRefused(f"The {what} may not contain NUL characters.", code="null_character")
    return text


# ---------------------------------------------------------------------------
# Checks before a document is accepted


def reference_checks(
    refs: list[vault.Reference],
) -> dict[vault.Reference, vault.SecretInfo | vault.VaultError]:
    """The Check button: does each reference resolve with the app's token? Never the value."""
    return vault.check_all(list(dict.fromkeys(refs)))


def document_problems(
    document: dict, *, exclude: ConnectionRequest | None = None
) -> list[doc.Issue]:
    """Model validation first: only a document valid on its own costs AWS and Vault calls."""
    issues = doc.validate(document)
    if issues:  # hostile or broken input is refused without calling anyone
        return issues
    name = document["Name"]
    if (exclude is None or exclude.name != name) and _exists_in_aws(name):
        issues.append(
            doc.Issue("Name", "name_exists_in_aws", "A connection with this name exists in AWS.")
        )
    if _name_taken(name, exclude):
        issues.append(_NAME_TAKEN)
    refs = doc.references(document)
    checked = reference_checks([ref for _, ref in refs])  # one Vault read per secret version
    for path, ref in refs:
        if isinstance(checked[ref], vault.VaultError):
            issues.append(doc.Issue(doc.path_text(path), checked[ref].code, checked[ref].message))
    return issues


_NAME_TAKEN = doc.Issue("Name", "name_taken", "Another request here already uses this name.")


def _name_taken(name: str, exclude: ConnectionRequest | None) -> bool:
    taken = R.objects.filter(R.HOLDS_NAME, name=name)
    if exclude is not None:
        taken = taken.exclude(pk=exclude.pk)
    return taken.exists()


def _exists_in_aws(name: str) -> bool:
    try:
        return eventbridge.describe_connection(name) is not None
    except eventbridge.EventBridgeError:
        return False  # AWS did not answer: the approval's create call is the final word


# ---------------------------------------------------------------------------
# Requester actions


def _save_revision(request: ConnectionRequest, *, author) -> None:
    """Save the request and keep its document as a numbered revision."""
    # The database enforces the unique and constraint checks: the live-name one is caught here.
    request.full_clean(exclude=["requester"], validate_unique=False, validate_constraints=False)
    try:
        with transaction.atomic():
            request.save()
    except IntegrityError:  # another request took the name since the check
        raise DocumentInvalid([_NAME_TAKEN]) from None
    DocumentRevision.objects.create(
        request=request,
        number=request.revision,
        document=request.document,
        document_hash=request.document_hash,
        author=author,
    )


def request_create(*, requester, document: dict) -> ConnectionRequest:
    if not requester.has_perm(CAN_REQUEST):
        raise ActionRefused("You may not request connections.", code="not_requester")
    issues = document_problems(document)
    if issues:
        raise DocumentInvalid(issues)
    request = R(
        name=document["Name"],
        authorization_type=document["AuthorizationType"],
        requester=requester,
        document=document,
        document_hash=doc.document_hash(document),
        expires_at=timezone.now() + settings.REQUEST_TTL,
    )
    with transaction.atomic():
        _save_revision(request, author=requester)
        audit.record(
            action="connection.request.create",
            actor=requester,
            request=request,
            data={"document": doc.redact(document), "document_hash": request.document_hash},
        )
    return request


def request_update(*, request: ConnectionRequest, editor, document: dict) -> ConnectionRequest:
    _locked(request, editor, "edit")  # refused before any Vault or AWS call
    issues = document_problems(document, exclude=request)
    if issues:
        raise DocumentInvalid(issues)
    new_hash = doc.document_hash(document)

    def apply(row: ConnectionRequest) -> None:
        if new_hash == row.document_hash:
            return
        previous = row.document_hash
        row.document = document
        row.document_hash = new_hash
        row.name = document["Name"]
        row.authorization_type = document["AuthorizationType"]
        row.revision += 1
        row.approved_hash = ""  # any approval was bound to the old document
        _save_revision(row, author=editor)
        audit.record(
            action="connection.request.edit",
            actor=editor,
            request=row,
            data={
                "document": doc.redact(document),
                "document_hash": new_hash,
                "previous_hash": previous,
                "revision": row.revision,
            },
        )

    return _locked(request, editor, "edit", apply)


def request_cancel(*, request: ConnectionRequest, actor) -> ConnectionRequest:
    _refuse_if_made(_locked(request, actor, "cancel"))

    def apply(row: ConnectionRequest) -> None:
        row.status = R.CANCELLED
        row.save(update_fields=["status", "updated_at"])
        audit.record(action="connection.request.cancel", actor=actor, request=row)

    return _locked(request, actor, "cancel", apply)


def _refuse_if_made(request: ConnectionRequest) -> None:
    """A failed attempt may have created the connection after all (a timeout, a lost answer):
    closing the request would leave it untracked. Retry adopts it instead."""
    if request.status != R.FAILED:
        return
    try:
        found = eventbridge.describe_connection(request.name)
    except eventbridge.EventBridgeError as exc:
        raise ActionRefused(
            f"AWS could not be asked whether this request's connection exists ({exc.message}); "
            "try again.",
            code="aws_unknown",
        ) from None
    if found is not None and _adopt_or_conflict(request, found).adopted:
        raise ActionRefused(
            "This request's connection exists in AWS after all: Retry adopts it.",
            code="connection_exists",
        )


# ---------------------------------------------------------------------------
# Approver actions


def request_reject(*, request: ConnectionRequest, approver, reason: str) -> ConnectionRequest:
    reason = _clean_text(reason, what="reason")
    if not reason:
        raise ActionRefused("A rejection needs a reason.", code="reason_required")
    _refuse_if_made(_locked(request, approver, "reject"))

    def apply(row: ConnectionRequest) -> None:
        row.status = R.REJECTED
        row.decided_by = approver
        row.decided_at = timezone.now()
        row.decision_comment = reason
        row.save()
        audit.record(
            action="connection.request.reject",
            actor=approver,
            request=row,
            outcome="rejected",
            data={"reason": reason, "document_hash": row.document_hash},
        )

    return _locked(request, approver, "reject", apply)


def request_approve(
    *, request: ConnectionRequest, approver, comment: str = "", seen_hash: str
) -> ConnectionRequest:
    """Approve and submit: at most one create_connection per request, whoever clicks how often."""
    comment = _clean_text(comment, what="comment")
    return _submit(_claim(request, approver, "approve", seen_hash, comment), approver)


def request_retry(*, request: ConnectionRequest, approver, seen_hash: str) -> ConnectionRequest:
    """Submit a failed request again (or one whose response was lost), reconciling first."""
    return _submit(_claim(request, approver, "retry", seen_hash, ""), approver)


def _claim(request, approver, action: str, seen_hash: str, comment: str) -> ConnectionRequest:
    """Approve and retry: one locked transaction records a due expiry, refuses, or claims the
    row for this attempt (of racing clicks exactly one claims). Vault is read only after it."""

    def apply(row: ConnectionRequest) -> None:
        if seen_hash != row.document_hash:
            raise ActionRefused(
                "The request changed after you opened it; review the new version before approving.",
                code="document_changed",
            )
        now = timezone.now()
        row.status = R.SUBMITTING
        row.submit_started_at = now
        row.submit_attempts += 1
        row.decided_by_id = row.decided_by_id or approver.pk
        row.decided_at = row.decided_at or now
        if action == "approve":
            row.decision_comment = comment
        row.approved_hash = seen_hash
        row.error_code = row.error_message = ""
        try:
            with transaction.atomic():
                row.save()
        except IntegrityError:
            # Only a failed request can meet this: it gave up its name, and another took it.
            raise ActionRefused(
                "Another request here now uses this name, so this one cannot be retried; "
                "reject or cancel it to close it.",
                code="name_taken",
            ) from None
        audit.record(
            action=f"connection.request.{action}",
            actor=approver,
            request=row,
            outcome="approved",
            data={
                "document_hash": row.approved_hash,
                "comment": comment,
                "attempt": row.submit_attempts,
            },
        )

    return _locked(request, approver, action, apply)


@sensitive_variables()
def _resolve(request: ConnectionRequest):
    return doc.resolve(request.document, vault.read_all, marker=request.marker)


@dataclass
class _Outcome:
    status: str
    error_code: str = ""
    error_message: str = ""
    connection: dict | None = None
    resolutions: dict | None = None
    adopted: bool = False
    describe_error: str = ""  # created, but describe_connection failed: details on refresh


@sensitive_variables("payload")
def _submit(request: ConnectionRequest, actor) -> ConnectionRequest:
    """Resolve, call AWS, record. Runs outside any transaction: the row is already claimed."""
    outcome = _Outcome(status=R.FAILED)
    payload = None
    try:
        if request.submit_attempts > 1:
            # Lost response or crash before: a connection may exist already. Look first.
            found = eventbridge.describe_connection(request.name)
            if found is not None:
                outcome = _adopt_or_conflict(request, found)
                return _finish(request, actor, outcome)
        payload, outcome.resolutions = _resolve(request)
        problems = doc.check_values(payload, outcome.resolutions)
        if problems:
            outcome.error_code = "value_invalid"
            outcome.error_message = " ".join(problems)
            return _finish(request, actor, outcome)
        try:
            created = eventbridge.create_connection(payload)
        except eventbridge.EventBridgeError as exc:
            if exc.code != "ResourceAlreadyExistsException":
                raise
            found = eventbridge.describe_connection(request.name)
            outcome = _adopt_or_conflict(request, found, outcome.resolutions)
            return _finish(request, actor, outcome)
        finally:
            payload = None  # drop the values as soon as AWS has them
        # The connection exists from here on, whatever describe_connection says: its answer
        # only adds SecretArn and StateReason, which a later refresh can still fetch.
        outcome.status = R.CREATED
        outcome.connection = created
        try:
            outcome.connection = {
                **created,
                **(eventbridge.describe_connection(request.name) or {}),
            }
        except eventbridge.EventBridgeError as exc:
            outcome.describe_error = exc.code
    except vault.VaultError as exc:
        outcome.error_code = f"vault_{exc.code}" if not exc.code.startswith("vault") else exc.code
        outcome.error_message = f"Reading a secret from Vault failed: {exc.message}"
    except eventbridge.EventBridgeError as exc:
        outcome.error_code = exc.code
        outcome.error_message = exc.message
    return _finish(request, actor, outcome)


def _adopt_or_conflict(request, found, resolutions=None) -> _Outcome:
    ours = (
        found is not None
        and request.marker in (found.get("Description") or "")
        and found.get("AuthorizationType") == request.authorization_type
    )
    if ours:
        return _Outcome(status=R.CREATED, connection=found, resolutions=resolutions, adopted=True)
    return _Outcome(
        status=R.FAILED,
        error_code="ResourceAlreadyExistsException",
        error_message=(
            "A connection with this name, not created by this request, already exists in the "
            "account; it was left alone."
        ),
        resolutions=resolutions,
    )


def _finish(request: ConnectionRequest, actor, outcome: _Outcome) -> ConnectionRequest:
    """Store the outcome and its audit events in one transaction."""
    attempt = request.submit_attempts
    request.status = outcome.status
    request.error_code = outcome.error_code
    request.error_message = outcome.error_message
    if outcome.connection:
        _apply_connection(request, outcome.connection)
    request.updated_at = timezone.now()
    events = []
    if outcome.resolutions:
        events.append(
            dict(
                action="connection.vault.resolve",
                actor=actor,
                request=request,
                data={
                    "document": doc.redact(request.document, outcome.resolutions),
                    "document_hash": request.document_hash,
                },
            )
        )
    if outcome.status == R.CREATED:
        action = "connection.create.adopt" if outcome.adopted else "connection.create.success"
        data = _connection_data(request)
        if outcome.describe_error:
            data["describe_error"] = outcome.describe_error
        events.append(dict(action=action, actor=actor, request=request, data=data))
    else:
        events.append(
            dict(
                action="connection.create.failure",
                actor=actor,
                request=request,
                outcome="failure",
                data={"error_code": outcome.error_code, "error": outcome.error_message},
            )
        )
    with transaction.atomic():
        # Only the attempt that claimed the row writes its result; a takeover after a lost
        # response (a later attempt) owns the row from then on, but every step is recorded.
        R.objects.filter(pk=request.pk, status=R.SUBMITTING, submit_attempts=attempt).update(
            **{name: getattr(request, name) for name in _RESULT_FIELDS}
        )
        audit.append(events)
    return request


_RESULT_FIELDS = (
    "status",
    "error_code",
    "error_message",
    "connection_arn",
    "connection_state",
    "state_reason",
    "secret_arn",
    "connection_created_at",
    "connection_modified_at",
    "last_authorized_at",
    "state_checked_at",
    "updated_at",
)


def _apply_connection(request: ConnectionRequest, found: dict) -> None:
    request.connection_arn = found.get("ConnectionArn", request.connection_arn)
    request.connection_state = found.get("ConnectionState", request.connection_state)
    request.state_reason = found.get("StateReason", "")
    request.secret_arn = found.get("SecretArn", request.secret_arn)
    request.connection_created_at = found.get("CreationTime", request.connection_created_at)
    request.connection_modified_at = found.get("LastModifiedTime", request.connection_modified_at)
    request.last_authorized_at = found.get("LastAuthorizedTime", request.last_authorized_at)
    request.state_checked_at = timezone.now()


def _connection_data(request: ConnectionRequest) -> dict:
    def iso(value):
        return value.isoformat() if value else None

    return {
        "secret_arn": request.secret_arn,
        "state_reason": request.state_reason,
        "authorization_type": request.authorization_type,
        "creation_time": iso(request.connection_created_at),
        "last_modified_time": iso(request.connection_modified_at),
    }


# ---------------------------------------------------------------------------
# Connection state refresh


# A refresh that changes any of these is recorded.
_REFRESH_WATCHED = (
    "connection_state",
    "state_reason",
    "connection_arn",
    "secret_arn",
    "connection_modified_at",  # changed in AWS's console, say
    "last_authorized_at",
)


def connection_refresh(*, request: ConnectionRequest, actor=None) -> ConnectionRequest:
    """describe_connection, and an audit event when anything changed."""
    if request.status != R.CREATED:
        raise ActionRefused("Only created connections can be refreshed.", code="not_created")
    found = eventbridge.describe_connection(request.name)
    with transaction.atomic():
        request = R.objects.select_for_update().get(pk=request.pk)
        before = [getattr(request, name) for name in _REFRESH_WATCHED]
        moved_on = (
            request.connection_arn and found and found["ConnectionArn"] != request.connection_arn
        )
        if found is None or moved_on:
            # Gone, or the name now belongs to another connection (made after this one went).
            request.connection_state = "DELETED"
            request.state_reason = "The connection no longer exists in AWS."
            request.state_checked_at = timezone.now()
        else:
            _apply_connection(request, found)
        request.save()
        after = [getattr(request, name) for name in _REFRESH_WATCHED]
        if after != before:
            audit.record(
                action="connection.state.refresh",
                actor=actor,
                request=request,
                data={"previous_state": before[0], **_connection_data(request)},
            )
    return request
