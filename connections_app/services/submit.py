"""Approve and retry: claim the change, read its secrets, make its one AWS call, record."""

from __future__ import annotations

from dataclasses import dataclass, field

from django.db import IntegrityError, transaction
from django.utils import timezone
from django.views.decorators.debug import sensitive_variables

from .. import audit, eventbridge, notify, vault
from .. import document as doc
from ..models import Connection, ConnectionRequest
from .filing import clean_text, locked, refuse_if_in_use
from .policy import ActionRefused
from .scopes import host_received, scope_problems

R = ConnectionRequest


def request_approve(
    *,
    request: ConnectionRequest,
    approver,
    comment: str = "",
    seen_hash: str,
    anyway: bool = False,
) -> ConnectionRequest:
    """Approve and submit: at most one AWS call per change, whoever clicks how often.
    `anyway`: the approver was told that a reference did not resolve, and approved all the
    same; the audit records it."""
    comment = clean_text(comment, what="comment")
    claimed = _claim(request, approver, "approve", seen_hash, comment, anyway=anyway)
    return _submit(claimed, approver)


def request_retry(*, request: ConnectionRequest, approver, seen_hash: str) -> ConnectionRequest:
    """Submit a failed change again (or one whose answer was lost), reconciling first."""
    return _submit(_claim(request, approver, "retry", seen_hash, ""), approver)


def _claim(
    request, approver, action: str, seen_hash: str, comment: str, *, anyway: bool = False
) -> ConnectionRequest:
    """Approve and retry: one locked transaction records a due expiry, refuses, or claims the
    row for this attempt (of racing clicks exactly one claims). Vault is read only after it."""

    def apply(row: ConnectionRequest) -> None:
        if seen_hash != row.document_hash:
            raise ActionRefused(
                "The request changed after you opened it; review the new version before approving.",
                code="document_changed",
            )
        problems = scope_problems(row.document, row.requester)
        if row.kind in R.DOCUMENT_KINDS and problems:  # scopes may have narrowed since
            raise ActionRefused(
                "Outside the requester's scopes now: " + " ".join(p.message for p in problems),
                code="out_of_scope",
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
            # Only a failed create can meet this: it gave up its name, and another took it.
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
                **({"anyway": anyway} if action == "approve" else {}),
            },
        )

    return locked(request, approver, action, apply)


@dataclass
class _Outcome:
    status: str = R.FAILED
    error_code: str = ""
    error_message: str = ""
    described: dict = field(default_factory=dict)  # what AWS answered, merged with a describe
    resolutions: dict | None = None
    adopted: bool = False  # a lost answer's effect, found by describe_connection
    describe_error: str = ""  # the call worked, but describe_connection failed: refresh later

    def fail(self, code: str, message: str) -> _Outcome:
        self.status, self.error_code, self.error_message = R.FAILED, code, message
        return self


@sensitive_variables()
def _resolve(request: ConnectionRequest):
    return doc.resolve(request.document, vault.read_all, marker=request.marker)


def _submit(request: ConnectionRequest, actor) -> ConnectionRequest:
    """Reconcile (after a lost answer), resolve, call AWS, record. Runs outside any
    transaction: the row is already claimed."""
    outcome = _Outcome()
    try:
        if request.submit_attempts > 1:
            # A lost answer or a crash before: the call may have worked. Look first.
            found = eventbridge.describe_connection(request.target, request.name)
            if _took_effect(request, found):
                outcome.status, outcome.described, outcome.adopted = (
                    _done(request),
                    found or {},
                    True,
                )
                return _finish(request, actor, outcome)
        _CALLS[request.kind](request, outcome)
    except vault.VaultError as exc:
        code = exc.code if exc.code.startswith("vault") else f"vault_{exc.code}"
        outcome.fail(code, f"Reading a secret from Vault failed: {exc.message}")
    except eventbridge.EventBridgeError as exc:
        outcome.fail(exc.code, exc.message)
    except ActionRefused as exc:
        outcome.fail(exc.code, exc.message)
    return _finish(request, actor, outcome)


def _done(request: ConnectionRequest) -> str:
    return R.CREATED if request.kind == R.CREATE else R.DONE


def _took_effect(request: ConnectionRequest, found: dict | None) -> bool:
    """Did an earlier attempt of this change take effect in AWS?"""
    if request.kind == R.DELETE:
        return found is None or found.get("ConnectionState") == "DELETING"
    if found is None:
        return False
    if request.kind == R.DEAUTHORIZE:
        return found.get("ConnectionState") in ("DEAUTHORIZING", "DEAUTHORIZED")
    # Create, update and rotate put this change's marker in the Description.
    return request.marker in (found.get("Description") or "")


@sensitive_variables("payload")
def _push_document(request: ConnectionRequest, outcome: _Outcome) -> None:
    """Create, update, rotate: the document with its secrets read now, in one AWS call."""
    payload, outcome.resolutions = _resolve(request)
    problems = doc.check_values(payload, outcome.resolutions)
    if problems:
        outcome.fail("value_invalid", " ".join(problems))
        return
    _still_mine(request)
    try:
        if request.kind == R.CREATE:
            answer = eventbridge.create_connection(request.target, payload)
        else:
            answer = eventbridge.update_connection(
                request.target, doc.for_update(payload, request.connection.document)
            )
    except eventbridge.EventBridgeError as exc:
        if exc.code != "ResourceAlreadyExistsException":
            raise
        found = eventbridge.describe_connection(request.target, request.name)
        if not _took_effect(request, found):
            outcome.fail(
                exc.code,
                "A connection with this name, not created by this request, already exists in "
                "the account; it was left alone.",
            )
            return
        answer, outcome.adopted = found, True
    finally:
        payload = None  # drop the values as soon as AWS has them
    _answered(request, outcome, answer)


def _answered(request: ConnectionRequest, outcome: _Outcome, answer: dict) -> None:
    """The call took effect, whatever describe_connection now says: its answer only adds
    SecretArn and StateReason, which a later refresh can still fetch."""
    outcome.status, outcome.described = _done(request), dict(answer)
    try:
        outcome.described.update(
            eventbridge.describe_connection(request.target, request.name) or {}
        )
    except eventbridge.EventBridgeError as exc:
        outcome.describe_error = exc.code


def _still_mine(request: ConnectionRequest) -> None:
    """Right before the AWS call: a slow attempt that a retry took over (it looked stale)
    must not make the call too."""
    mine = R.objects.filter(
        pk=request.pk, status=R.SUBMITTING, submit_attempts=request.submit_attempts
    )
    if not mine.exists():
        raise ActionRefused(
            "A later attempt took this request over; this one made no AWS call.",
            code="taken_over",
        )


def _deauthorize(request: ConnectionRequest, outcome: _Outcome) -> None:
    _still_mine(request)
    _answered(request, outcome, eventbridge.deauthorize_connection(request.target, request.name))


def _delete(request: ConnectionRequest, outcome: _Outcome) -> None:
    refuse_if_in_use(request.connection)  # a destination may have appeared since filing
    _still_mine(request)
    _answered(request, outcome, eventbridge.delete_connection(request.target, request.name))


_CALLS = {
    R.CREATE: _push_document,
    R.UPDATE: _push_document,
    R.ROTATE: _push_document,
    R.DEAUTHORIZE: _deauthorize,
    R.DELETE: _delete,
}


def _finish(request: ConnectionRequest, actor, outcome: _Outcome) -> ConnectionRequest:
    """Store the outcome, the connection as AWS now holds it and the audit events, in one
    transaction; only the attempt that claimed the row writes its result."""
    attempt = request.submit_attempts
    request.status = outcome.status
    request.error_code = outcome.error_code
    request.error_message = outcome.error_message
    with transaction.atomic():
        # A takeover after a lost answer (a later attempt) owns the row from then on, but
        # every step is recorded.
        mine = R.objects.filter(pk=request.pk, status=R.SUBMITTING, submit_attempts=attempt)
        written = mine.update(
            status=request.status,
            error_code=request.error_code,
            error_message=request.error_message,
            updated_at=timezone.now(),
        )
        if written and outcome.status in R.SUCCEEDED:
            _record_connection(request, outcome)
        events = audit.append(_events(request, actor, outcome))
        if written:
            notify.change_result(request, events[-1])
    return request


def _record_connection(request: ConnectionRequest, outcome: _Outcome) -> None:
    """The Connection row after a change that took effect."""
    found = outcome.described
    connection = request.connection
    if connection is None:  # created (or adopted): the connection is managed from now on
        connection, _ = Connection.objects.get_or_create(
            arn=found["ConnectionArn"],
            defaults={
                "target": request.target,
                "name": request.name,
                "authorization_type": request.authorization_type,
            },
        )
        request.connection = connection
        R.objects.filter(pk=request.pk).update(connection=connection)
    apply_described(connection, found)
    if request.kind == R.DELETE and not found.get("ConnectionState"):
        connection.state = Connection.DELETED  # gone by the time it was described
    if request.kind in R.DOCUMENT_KINDS:
        host_received(request.document, request.pk)
        connection.document = doc.redact(request.document, outcome.resolutions)
        connection.authorization_type = request.authorization_type
        connection.pushed_at = timezone.now()
        connection.managed = True  # adopted, if a sweep had found it
        connection.drift = []  # what was pushed is what Vault holds now, or what was chosen
    connection.changed_outside = connection.deleted_outside = False  # our change, not theirs
    connection.save()


def apply_described(connection: Connection, found: dict) -> None:
    """What describe_connection (or a call's answer) says, onto the row. AuthParameters is
    never taken: AWS holds no value there, and an emulator may echo one."""
    connection.arn = found.get("ConnectionArn", connection.arn)
    connection.state = found.get("ConnectionState", connection.state)
    connection.state_reason = found.get("StateReason", "")
    connection.secret_arn = found.get("SecretArn", connection.secret_arn)
    connection.authorization_type = found.get("AuthorizationType", connection.authorization_type)
    connection.created_in_aws_at = found.get("CreationTime", connection.created_in_aws_at)
    connection.modified_at = found.get("LastModifiedTime", connection.modified_at)
    connection.authorized_at = found.get("LastAuthorizedTime", connection.authorized_at)
    connection.checked_at = timezone.now()
    if connection.state != "DEAUTHORIZED":
        connection.deauthorized_by_aws = False


def connection_data(connection: Connection) -> dict:
    def iso(value):
        return value.isoformat() if value else None

    return {
        "secret_arn": connection.secret_arn,
        "state_reason": connection.state_reason,
        "authorization_type": connection.authorization_type,
        "creation_time": iso(connection.created_in_aws_at),
        "last_modified_time": iso(connection.modified_at),
    }


def _events(request: ConnectionRequest, actor, outcome: _Outcome) -> list[dict]:
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
    prefix = f"connection.{request.kind}"
    if outcome.status in R.SUCCEEDED:
        data = {}
        if request.connection is not None:
            data = connection_data(request.connection)
        if outcome.describe_error:
            data["describe_error"] = outcome.describe_error
        action = f"{prefix}.adopt" if outcome.adopted else f"{prefix}.success"
        events.append(dict(action=action, actor=actor, request=request, data=data))
    else:
        events.append(
            dict(
                action=f"{prefix}.failure",
                actor=actor,
                request=request,
                outcome="failure",
                data={"error_code": outcome.error_code, "error": outcome.error_message},
            )
        )
    return events
