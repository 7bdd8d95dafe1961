"""The workflow: every change to a connection, and the audit event that records it, happens
here. `policy` says what a user may do now; `filing` files and decides changes short of the AWS
call; `submit` makes the one AWS call of an approved change; `state` follows AWS afterwards."""

from .filing import (
    MAX_TEXT,
    DocumentInvalid,
    change_file,
    change_hash,
    document_problems,
    notifications_mute,
    open_change,
    reference_checks,
    request_cancel,
    request_create,
    request_reject,
    request_update,
    requests_expire_due,
    rotation_document,
)
from .policy import (
    ACTIONS,
    CHANGES,
    CLOSABLE,
    EDITABLE_KINDS,
    ActionRefused,
    allowed_actions,
    allowed_changes,
    change_refusal,
    refusal,
)
from .state import connection_refresh, connections_refresh_passing
from .submit import request_approve, request_retry
from .sweep import sweep_target

__all__ = [
    "ACTIONS",
    "CHANGES",
    "CLOSABLE",
    "EDITABLE_KINDS",
    "MAX_TEXT",
    "ActionRefused",
    "DocumentInvalid",
    "allowed_actions",
    "allowed_changes",
    "change_file",
    "change_hash",
    "change_refusal",
    "connection_refresh",
    "connections_refresh_passing",
    "document_problems",
    "notifications_mute",
    "open_change",
    "reference_checks",
    "refusal",
    "request_approve",
    "request_cancel",
    "request_create",
    "request_reject",
    "request_retry",
    "request_update",
    "requests_expire_due",
    "rotation_document",
    "sweep_target",
]
