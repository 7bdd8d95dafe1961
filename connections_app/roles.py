"""The three roles, as Django groups with permissions, and the navigation each one sees."""

import functools

from django.contrib.auth.models import Group, Permission
from django.urls import reverse

REQUESTERS = "connection-requesters"
APPROVERS = "connection-approvers"
AUDITORS = "auditors"

GROUP_PERMISSIONS = {
    REQUESTERS: ["add_connectionrequest", "view_connectionrequest"],
    APPROVERS: ["approve_connectionrequest", "view_connectionrequest", "view_auditevent"],
    AUDITORS: ["view_auditevent"],
}

CAN_REQUEST = "connections_app.add_connectionrequest"
CAN_APPROVE = "connections_app.approve_connectionrequest"
CAN_AUDIT = "connections_app.view_auditevent"


def ensure_groups(**kwargs) -> None:
    for name, codenames in GROUP_PERMISSIONS.items():
        group, _ = Group.objects.get_or_create(name=name)
        perms = Permission.objects.filter(
            content_type__app_label="connections_app", codename__in=codenames
        )
        group.permissions.add(*perms)


def group_ids(user) -> set[int]:
    """The user's groups, read once per request (cached on the user object)."""
    if not hasattr(user, "_group_ids"):
        user._group_ids = set(user.groups.values_list("pk", flat=True))
    return user._group_ids


def may_approve(user, target) -> bool:
    """Holds the approve permission and, when the target limits its approvers to some groups,
    is in one of them (superusers always are)."""
    if not user.has_perm(CAN_APPROVE):
        return False
    if user.is_superuser:
        return True
    if not hasattr(target, "_approver_group_ids"):
        target._approver_group_ids = set(target.approver_groups.values_list("pk", flat=True))
    return not target._approver_group_ids or bool(target._approver_group_ids & group_ids(user))


def navigation(request) -> dict:
    """Menu entries (address, label) for what the signed-in user may do; none for visitors."""
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {"nav": []}
    items = []
    if user.has_perm(CAN_REQUEST):
        items += [("request_new", "New connection"), ("request_mine", "My requests")]
    if user.has_perm(CAN_APPROVE):
        items.append(("approval_queue", "Approval queue"))
    if user.has_perm(CAN_REQUEST) or user.has_perm(CAN_APPROVE) or user.has_perm(CAN_AUDIT):
        items.append(("connection_list", "Connections"))
    if user.has_perm(CAN_AUDIT):
        items += [("audit_list", "Audit log"), ("audit_secret_uses", "Secret uses")]
    items.append(("notifications", "Notifications"))
    if user.is_superuser:
        items += [("status", "Status"), ("admin:index", "Admin")]
    if user.has_perm(CAN_APPROVE):
        from .selectors import approvals_waiting

        waiting = approvals_waiting(user)
        items = [
            (name, f"{label} ({waiting})" if name == "approval_queue" else label)
            for name, label in items
        ]
    return {"nav": _marked(request.path, [(_address(name), label) for name, label in items])}


def _marked(path: str, entries: list[tuple[str, str]]) -> list[tuple[str, str, str]]:
    """(address, label, aria-current): "page" for the page itself, "true" for the entry whose
    section the page is in (the longest address the path starts with), "" for the others."""
    inside = [address for address, _ in entries if address != "/" and path.startswith(address)]
    section = max(inside, key=len, default=None)
    return [
        (address, label, "page" if address == path else "true" if address == section else "")
        for address, label in entries
    ]


@functools.cache
def _address(url_name: str) -> str:
    # Every page shows the menu; the URLconf never changes while serving.
    return reverse(url_name)
