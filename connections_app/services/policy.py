"""What may this user do now: the one answer the services refuse with and pages draw from."""

from __future__ import annotations

from django.core.exceptions import PermissionDenied

from ..models import Connection, ConnectionRequest
from ..roles import CAN_APPROVE, CAN_REQUEST, may_approve
from .scopes import within_scopes

R = ConnectionRequest


class ActionRefused(PermissionDenied):
    """A workflow action that may not happen now; `code` is stable for tests and templates."""

    def __init__(self, message: str, *, code: str):
        super().__init__(message)
        self.message = message
        self.code = code


# Actions on a request (a change), by its requester or by an approver.
ACTIONS = ("edit", "cancel", "approve", "reject", "retry")
# A pending request can be withdrawn or turned down; so can a failed one nobody will retry.
CLOSABLE = (R.PENDING, R.FAILED)
# Kinds whose document a requester edits in the connection form (others are filed again), and
# when: a failed one goes back to pending for a new approval once edited.
EDITABLE_KINDS = (R.CREATE, R.UPDATE)
EDITABLE = (R.PENDING, R.FAILED)


def refusal(action: str, request: ConnectionRequest, user) -> ActionRefused | None:
    """Why `user` may not take `action` on `request` now, or None when they may."""
    owner = user.pk == request.requester_id
    if action in ("edit", "cancel"):
        if not owner:
            return ActionRefused(f"Only the requester may {action} a request.", code="not_owner")
    elif not user.has_perm(CAN_APPROVE):
        return ActionRefused("You may not approve or reject requests.", code="not_approver")
    elif not may_approve(user, request.target):
        return ActionRefused(
            f"Approvers of target {request.target.name} are limited to some groups, and you "
            "are in none of them.",
            code="not_target_approver",
        )
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
    elif action == "edit" and request.status not in EDITABLE:
        return ActionRefused("Only a pending or failed request can be edited.", code="not_pending")
    elif action != "edit" and request.status != R.PENDING:
        return ActionRefused(_busy_message(request), code="not_pending")
    elif action == "edit" and request.kind not in EDITABLE_KINDS:
        return ActionRefused(
            f"A {request.get_kind_display().lower()} request cannot be edited: cancel it and "
            "file a new one.",
            code="not_editable",
        )
    return None


def allowed_actions(request: ConnectionRequest, user) -> set[str]:
    return {action for action in ACTIONS if refusal(action, request, user) is None}


def _busy_message(request: ConnectionRequest) -> str:
    return {
        R.SUBMITTING: "This request is already being submitted.",
        R.CREATED: "This request's connection has already been created.",
        R.DONE: "This request has already been carried out.",
        R.FAILED: "This request failed; use Retry.",
    }.get(request.status, f"This request is {request.get_status_display().lower()}.")


# Changes a requester may file on a connection (reauthorize is an update that supplies
# credentials again, offered when the connection is deauthorized; adopt is an update of a
# connection a sweep found, filed by an approver, after which it is managed here).
CHANGES = (R.UPDATE, R.ROTATE, R.DEAUTHORIZE, "reauthorize", R.DELETE, "adopt")


def change_refusal(
    kind: str, connection: Connection, user, *, open_change: ConnectionRequest | None
) -> ActionRefused | None:
    """Why `user` may not file a `kind` change on `connection` now, or None when they may.
    `open_change` is the connection's open change, if it has one."""
    if kind == "adopt":
        if not may_approve(user, connection.target):
            return ActionRefused(
                "Only approvers of this connection's target adopt it.", code="not_approver"
            )
        if connection.managed:
            return ActionRefused("This connection is managed here already.", code="managed")
    elif not user.has_perm(CAN_REQUEST):
        return ActionRefused("You may not request changes to connections.", code="not_requester")
    elif not connection.managed:
        return ActionRefused(
            "Nobody manages this connection here yet: an approver can adopt it first.",
            code="unmanaged",
        )
    if connection.gone:
        return ActionRefused(
            "This connection has been deleted in AWS: nothing more can be changed.", code="gone"
        )
    if kind != "adopt" and not within_scopes(connection.document, user):
        return ActionRefused(
            "This connection's secrets are outside your groups' scopes: a member of the team "
            "that owns them files its changes.",
            code="out_of_scope",
        )
    if open_change is not None:
        return ActionRefused(
            f"This connection already has an open {open_change.get_kind_display().lower()} "
            f"request (#{open_change.pk}): it must be decided, or closed, first.",
            code="open_change",
        )
    deauthorized = connection.state in ("DEAUTHORIZED", "DEAUTHORIZING")
    if kind == R.DEAUTHORIZE and deauthorized:
        return ActionRefused("This connection is already deauthorized.", code="deauthorized")
    if kind == "reauthorize" and not deauthorized:
        return ActionRefused(
            "Only a deauthorized connection needs re-authorizing; use Update.",
            code="not_deauthorized",
        )
    return None


def allowed_changes(connection: Connection, user, open_change) -> set[str]:
    return {
        kind
        for kind in CHANGES
        if change_refusal(kind, connection, user, open_change=open_change) is None
    }
