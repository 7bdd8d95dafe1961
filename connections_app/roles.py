"""The three roles, as Django groups with permissions, and the navigation each one sees."""

import functools

from django.contrib.auth import get_user_model
from django.contrib.auth.backends import ModelBackend
from django.contrib.auth.models import Group, Permission
from django.contrib.contenttypes.models import ContentType
from django.urls import reverse

from . import sql

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
    """Menu entries (address, label) for what the signed-in user may do; none for visitors."""
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
    return {"nav": [(_address(name), label) for name, label in items]}


@functools.cache
def _address(url_name: str) -> str:
    # Every page shows the menu; the URLconf never changes while serving.
    return reverse(url_name)


class PermissionBackend(ModelBackend):
    """Django's ModelBackend, loading the signed-in user and their permissions (own and through
    groups) with one plain query each: every page asks for both (the menu depends on them), and
    the ORM's queries cost several times as much."""

    def get_user(self, user_id):
        model = get_user_model()
        user = sql.get(model, **{model._meta.pk.attname: user_id})
        return user if user is not None and self.user_can_authenticate(user) else None

    def get_all_permissions(self, user_obj, obj=None):
        if not user_obj.is_active or user_obj.is_anonymous or obj is not None:
            return set()
        if not hasattr(user_obj, "_perm_cache"):
            user_obj._perm_cache = {f"{app}.{codename}" for app, codename in _permissions(user_obj)}
        return user_obj._perm_cache


_ALL = "SELECT ct.app_label, p.codename FROM {perm} p JOIN {ct} ct ON ct.id = p.content_type_id"
_HELD = (
    " WHERE p.id IN (SELECT permission_id FROM {user_perm} WHERE user_id = %s)"
    " OR p.id IN (SELECT gp.permission_id FROM {group_perm} gp"
    " JOIN {user_group} ug ON ug.group_id = gp.group_id WHERE ug.user_id = %s)"
)


def _permissions(user) -> list[tuple[str, str]]:
    """(app_label, codename) of every permission the user holds, directly or through groups."""
    User = type(user)
    tables = {
        "perm": sql.table(Permission),
        "ct": sql.table(ContentType),
        "user_perm": sql.table(User.user_permissions.through),
        "user_group": sql.table(User.groups.through),
        "group_perm": sql.table(Group.permissions.through),
    }
    if user.is_superuser:
        return sql.execute(_ALL.format(**tables))[0]
    return sql.execute((_ALL + _HELD).format(**tables), [user.pk, user.pk])[0]
