"""The workflow: every change to a request, and the audit event that records it, happens here."""

from __future__ import annotations

import logging
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.db import IntegrityError, transaction
from django.utils import timezone
from django.views.decorators.debug import sensitive_variables

from . import audit, eventbridge, sql, vault
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
# Checks before a document is accepted


def reference_checks(texts: list[str]) -> dict[str, vault.SecretInfo | vault.VaultError]:
    """The Check button: does each reference resolve with the app's token? Never the value."""
    answers: dict[str, vault.SecretInfo | vault.VaultError] = {}
    parsed = {}
    for text in texts:
        try:
            parsed[text] = vault.parse_reference(text)
        except vault.VaultError as exc:
            answers[text] = exc
    checked = vault.check_all(list(parsed.values()))
    return answers | {text: checked[ref] for text, ref in parsed.items()}


def document_problems(
    document: dict, *, exclude: ConnectionRequest | None = None
) -> list[doc.Issue]:
    checks = _Checks(document, exclude)
    return checks.aws_issues() + checks.issues


class _Checks:
    """A document's checks. Model validation first: only a document valid on its own costs
    AWS and Vault calls. AWS is asked about the name in the background meanwhile; its answer
    is `aws_issues()`, the rest is `issues`."""

    def __init__(self, document: dict, exclude: ConnectionRequest | None):
        self.issues = doc.validate(document)
        self._in_aws = None
        if self.issues:  # hostile or broken input is refused without calling anyone
            return
        name = document["Name"]
        if exclude is None or exclude.name != name:
            self._in_aws = _background.submit(_exists_in_aws, name)
        if _name_taken(name, exclude):
            self.issues.append(
                doc.Issue("Name", "name_taken", "Another request here already uses this name.")
            )
        leaves = list(doc.secret_leaves(document))
        refs = {doc.reference_text(leaf): doc.to_vault_reference(leaf) for _, leaf in leaves}
        checked = vault.check_all(list(refs.values()))  # one Vault read per distinct reference
        for path, leaf in leaves:
            found = checked[refs[doc.reference_text(leaf)]]
            if isinstance(found, vault.VaultError):
                self.issues.append(doc.Issue(doc.path_text(path), found.code, found.message))

    def aws_issues(self) -> list[doc.Issue]:
        if self._in_aws is not None and self._in_aws.result():
            return [
                doc.Issue(
                    "Name", "name_exists_in_aws", "A connection with this name exists in AWS."
                )
            ]
        return []


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


def _check_requester(user) -> None:
    if not user.has_perm(CAN_REQUEST):
        raise ActionRefused("You may not request connections.", code="not_requester")


def _save_revision(request: ConnectionRequest, *, author) -> None:
    """Save the request and keep its document as a numbered revision."""
    # Field checks only: each of the skipped ones is a query, and the database enforces them
    # anyway (the live-name constraint is caught below; public_id is a random UUID; the
    # requester is the signed-in user).
    request.full_clean(exclude=["requester"], validate_unique=False, validate_constraints=False)
    try:
        # No savepoint (two round trips): the refusal below ends the whole transaction anyway.
        with transaction.atomic(savepoint=False):
            request.save()
    except IntegrityError:  # another request took the name since the check
        raise DocumentInvalid(
            [doc.Issue("Name", "name_taken", "Another request here already uses this name.")]
        ) from None
    DocumentRevision.objects.create(
        request=request,
        number=request.revision,
        document=request.document,
        document_hash=request.document_hash,
        author=author,
    )


def request_create(*, requester, document: dict) -> ConnectionRequest:
    _check_requester(requester)
    checks = _Checks(document, None)
    if checks.issues:
        raise DocumentInvalid(checks.aws_issues() + checks.issues)
    now = timezone.now()
    request = R(
        name=document["Name"],
        authorization_type=document["AuthorizationType"],
        requester=requester,
        document=document,
        document_hash=doc.document_hash(document),
        expires_at=now + settings.REQUEST_TTL,
    )
    with transaction.atomic():
        _save_revision(request, author=requester)
        # Written while AWS answers about the name, and rolled back if it holds one already.
        issues = checks.aws_issues()
        if issues:
            raise DocumentInvalid(issues)
        audit.record(
            action="connection.request.create",
            actor=requester,
            request=request,
            data={"document": doc.redact(document), "document_hash": request.document_hash},
        )
    return request


def request_update(*, request: ConnectionRequest, editor, document: dict) -> ConnectionRequest:
    _expire_now(request)
    return _update(request=request, editor=editor, document=document)


@transaction.atomic
def _update(*, request: ConnectionRequest, editor, document: dict) -> ConnectionRequest:
    request = R.objects.select_for_update().get(pk=request.pk)
    if editor.pk != request.requester_id:
        raise ActionRefused("Only the requester may edit a request.", code="not_owner")
    _refuse_if_expired(request)
    if request.status != R.PENDING:
        raise ActionRefused("Only a pending request can be edited.", code="not_pending")
    issues = document_problems(document, exclude=request)
    if issues:
        raise DocumentInvalid(issues)
    new_hash = doc.document_hash(document)
    if new_hash == request.document_hash:
        return request
    previous = request.document_hash
    request.document = document
    request.document_hash = new_hash
    request.name = document["Name"]
    request.authorization_type = document["AuthorizationType"]
    request.revision += 1
    request.approved_hash = ""  # any approval was bound to the old document
    _save_revision(request, author=editor)
    audit.record(
        action="connection.request.edit",
        actor=editor,
        request=request,
        data={
            "document": doc.redact(document),
            "document_hash": new_hash,
            "previous_hash": previous,
            "revision": request.revision,
        },
    )
    return request


def request_cancel(*, request: ConnectionRequest, actor) -> ConnectionRequest:
    _expire_now(request)
    _refuse_if_made(request)
    return _cancel(request=request, actor=actor)


@transaction.atomic
def _cancel(*, request: ConnectionRequest, actor) -> ConnectionRequest:
    request = R.objects.select_for_update().get(pk=request.pk)
    if actor.pk != request.requester_id:
        raise ActionRefused("Only the requester may cancel a request.", code="not_owner")
    _refuse_if_expired(request)
    if request.status not in CLOSABLE:
        raise ActionRefused(
            "Only a pending or failed request can be cancelled.", code="not_pending"
        )
    request.status = R.CANCELLED
    request.save(update_fields=["status", "updated_at"])
    audit.record(action="connection.request.cancel", actor=actor, request=request)
    return request


# ---------------------------------------------------------------------------
# Expiry


def _expire_if_due(request: ConnectionRequest) -> bool:
    """Inside a transaction holding the row: a pending request past its time fails closed."""
    if request.status == R.PENDING and request.expires_at <= timezone.now():
        request.status = R.EXPIRED
        request.save(update_fields=["status", "updated_at"])
        audit.record(
            action="connection.request.expire",
            request=request,
            outcome="expired",
            data={"expired_at": request.expires_at.isoformat()},
        )
        return True
    return False


# A pending request can be withdrawn or turned down; so can a failed one nobody will retry.
CLOSABLE = (R.PENDING, R.FAILED)


def expire_overdue(request: ConnectionRequest) -> ConnectionRequest:
    """The request, expired first if it is pending past its time (pages show it as it is)."""
    if request.status == R.PENDING and request.expires_at <= timezone.now():
        _expire_now(request)
        return R.load(request.pk, people=True)
    return request


def _expire_now(request: ConnectionRequest) -> None:
    """Commit the expiry on its own, so that the refusal that follows cannot roll it back."""
    due = R.objects.filter(pk=request.pk, status=R.PENDING, expires_at__lte=timezone.now())
    if not due.exists():
        return  # the locked re-check in the action itself still refuses a late one
    with transaction.atomic():
        _expire_if_due(R.objects.select_for_update().get(pk=request.pk))


def _refuse_if_expired(request: ConnectionRequest) -> None:
    if request.status == R.EXPIRED or (
        request.status == R.PENDING and request.expires_at <= timezone.now()
    ):
        raise ActionRefused(
            "This request expired before it was decided; the requester must file it again.",
            code="expired",
        )


def requests_expire_due() -> int:
    """Expire every pending request past its time; returns how many."""
    count = 0
    due = R.objects.filter(status=R.PENDING, expires_at__lte=timezone.now()).values_list(
        "pk", flat=True
    )
    for pk in list(due):
        with transaction.atomic():
            count += _expire_if_due(R.objects.select_for_update().get(pk=pk))
    return count


# ---------------------------------------------------------------------------
# Approver actions


def _check_approver(request: ConnectionRequest, user) -> None:
    if not user.has_perm(CAN_APPROVE):
        raise ActionRefused("You may not approve or reject requests.", code="not_approver")
    if user.pk == request.requester_id:
        raise ActionRefused(
            "You filed this request: another approver must decide it.", code="own_request"
        )


def request_reject(*, request: ConnectionRequest, approver, reason: str) -> ConnectionRequest:
    _expire_now(request)
    _refuse_if_made(request)
    return _reject(request=request, approver=approver, reason=reason)


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


@transaction.atomic
def _reject(*, request: ConnectionRequest, approver, reason: str) -> ConnectionRequest:
    request = R.objects.select_for_update().get(pk=request.pk)
    _check_approver(request, approver)
    _refuse_if_expired(request)
    if request.status not in CLOSABLE:
        raise ActionRefused("Only a pending or failed request can be rejected.", code="not_pending")
    reason = (reason or "").strip()
    if not reason:
        raise ActionRefused("A rejection needs a reason.", code="reason_required")
    request.status = R.REJECTED
    request.decided_by = approver
    request.decided_at = timezone.now()
    request.decision_comment = reason
    request.save()
    audit.record(
        action="connection.request.reject",
        actor=approver,
        request=request,
        outcome="rejected",
        data={"reason": reason, "document_hash": request.document_hash},
    )
    return request


def request_approve(
    *, request: ConnectionRequest, approver, comment: str = "", seen_hash: str
) -> ConnectionRequest:
    """Approve and submit: at most one create_connection per request, whoever clicks how often."""
    _check_approver(request, approver)
    reading = None
    if request.status == R.PENDING and seen_hash == request.document_hash:
        # Vault is read while the claim commits (reads are side-effect free); if the claim is
        # refused, the values are dropped unused.
        reading = _background.submit(_resolve, request)
    try:
        claimed = _claim(request, approver, comment=comment, seen_hash=seen_hash, retry=False)
    except ActionRefused:
        if reading is not None:
            reading.cancel() or reading.exception()  # wait, so no value outlives the call
        raise
    return _submit(claimed, approver, reading)


def request_retry(*, request: ConnectionRequest, approver, seen_hash: str) -> ConnectionRequest:
    """Submit a failed request again (or one whose response was lost), reconciling first."""
    _check_approver(request, approver)
    claimed = _claim(request, approver, comment="", seen_hash=seen_hash, retry=True)
    return _submit(claimed, approver, None)


_background = ThreadPoolExecutor(max_workers=4, thread_name_prefix="approve")


@sensitive_variables()
def _resolve(request: ConnectionRequest):
    return doc.resolve(request.document, vault.read_all, marker=request.marker)


def _claim(request, approver, *, comment: str, seen_hash: str, retry: bool) -> ConnectionRequest:
    try:
        return _claim_row(request, approver, comment=comment, seen_hash=seen_hash, retry=retry)
    except IntegrityError:
        # Only a failed request can meet this: it gave up its name, and another took it.
        raise ActionRefused(
            "Another request here now uses this name, so this one cannot be retried; "
            "reject or cancel it to close it.",
            code="name_taken",
        ) from None


def _claim_row(request, approver, *, comment: str, seen_hash: str, retry: bool):
    """Set `submitting` with one compare-and-set UPDATE; of racing clicks exactly one wins."""
    now = timezone.now()
    fields = {
        "status": R.SUBMITTING,
        "submit_started_at": now,
        "submit_attempts": request.submit_attempts + 1,
        "decided_by_id": request.decided_by_id or approver.pk,
        "decided_at": request.decided_at or now,
        "decision_comment": request.decision_comment if retry else (comment or "").strip(),
        "approved_hash": seen_hash,
        "error_code": "",
        "error_message": "",
        "updated_at": now,
    }
    expected = R.FAILED if retry else R.PENDING
    if request.status == expected and request.document_hash == seen_hash:
        live = dict(
            id=request.pk,
            status=expected,
            document_hash=seen_hash,
            submit_attempts=request.submit_attempts,
        )
        if not retry:
            live["expires_at__gt"] = now
        with transaction.atomic():
            if sql.update(R, fields, **live) == 1:
                for name, value in fields.items():
                    setattr(request, name, value)
                _record_claim(request, approver, retry)
                return request
    return _claim_locked(request, approver, comment=comment, seen_hash=seen_hash, retry=retry)


def _claim_locked(request, approver, *, comment: str, seen_hash: str, retry: bool):
    """The quick compare-and-set missed (stale page, expiry, takeover): decide under the lock."""
    with transaction.atomic():
        _expire_if_due(R.objects.select_for_update().get(pk=request.pk))  # kept if refused
    with transaction.atomic():
        request = R.objects.select_for_update().get(pk=request.pk)
        _check_approver(request, approver)
        _refuse_if_expired(request)
        if seen_hash != request.document_hash:
            raise ActionRefused(
                "The request changed after you opened it; review the new version before approving.",
                code="document_changed",
            )
        now = timezone.now()
        if retry:
            if not request.retryable:
                raise ActionRefused(_busy_message(request), code="not_retryable")
        elif request.status != R.PENDING:
            raise ActionRefused(_busy_message(request), code="not_pending")
        request.status = R.SUBMITTING
        request.submit_started_at = now
        request.submit_attempts += 1
        request.decided_by = request.decided_by or approver
        request.decided_at = request.decided_at or now
        if not retry:
            request.decision_comment = (comment or "").strip()
        request.approved_hash = seen_hash
        request.error_code = request.error_message = ""
        request.save()
        _record_claim(request, approver, retry)
        return request


def _record_claim(request: ConnectionRequest, approver, retry: bool) -> None:
    audit.record(
        action="connection.request.retry" if retry else "connection.request.approve",
        actor=approver,
        request=request,
        outcome="approved",
        data={
            "document_hash": request.approved_hash,
            "comment": "" if retry else request.decision_comment,
            "attempt": request.submit_attempts,
        },
    )


def _busy_message(request: ConnectionRequest) -> str:
    return {
        R.SUBMITTING: "This request is already being submitted.",
        R.CREATED: "This request's connection has already been created.",
        R.FAILED: "This request failed; use Retry.",
    }.get(request.status, f"This request is {request.get_status_display().lower()}.")


@dataclass
class _Outcome:
    status: str
    error_code: str = ""
    error_message: str = ""
    connection: dict | None = None
    resolutions: dict | None = None
    adopted: bool = False
    describe_error: str = ""  # created, but describe_connection failed: details on refresh


@sensitive_variables("payload", "reading")
def _submit(request: ConnectionRequest, actor, reading: Future | None) -> ConnectionRequest:
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
        payload, outcome.resolutions = reading.result() if reading else _resolve(request)
        reading = None
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
    finally:
        if reading is not None:
            reading.cancel() or reading.exception()
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
        sql.update(
            R,
            {name: getattr(request, name) for name in _RESULT_FIELDS},
            id=request.pk,
            status=R.SUBMITTING,
            submit_attempts=attempt,
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
