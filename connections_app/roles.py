"""The three roles, as Django groups with permissions, and the navigation each one sees."""

from django.contrib.auth.backends import ModelBackend
from django.contrib.auth.models import Group, Permission
from django.db.models import Q

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


def navigation(request) -> dict:
    """Menu entries for what the signed-in user may do; nothing for anonymous visitors."""
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {"nav": []}
    items = []
    if user.has_perm(CAN_REQUEST):
        items += [("request_new", "New request"), ("request_mine", "My requests")]
    if user.has_perm(CAN_APPROVE):
        items += [("approval_queue", "Approval queue"), ("connection_list", "Connections")]
    if user.has_perm(CAN_AUDIT):
        items.append(("audit_list", "Audit log"))
    if user.is_superuser:
        items += [("status", "Status"), ("admin:index", "Admin")]
    return {"nav": items}


class PermissionBackend(ModelBackend):
    """Django's ModelBackend, loading a user's own and group permissions in one query."""

    def get_all_permissions(self, user_obj, obj=None):
        if not user_obj.is_active or user_obj.is_anonymous or obj is not None:
            return set()
        if not hasattr(user_obj, "_perm_cache"):
            perms = Permission.objects.all()
            if not user_obj.is_superuser:
                perms = perms.filter(Q(user=user_obj) | Q(group__user=user_obj))
            rows = perms.values_list("content_type__app_label", "codename").distinct()
            user_obj._perm_cache = {f"{app}.{codename}" for app, codename in rows}
        return user_obj._perm_cache
