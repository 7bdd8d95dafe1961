from django.contrib import admin

from . import audit_review
from .models import (
    AuditCheckpoint,
    AuditEvent,
    Connection,
    ConnectionRequest,
    DocumentRevision,
    Notification,
    Scope,
    SecretHost,
    Sweep,
    Target,
)
from .oidc_identity import OidcIdentity


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


def _fixed_choices_filter(field: str, values: tuple[str, ...]):
    """A list filter offering known values: the default one runs SELECT DISTINCT over the log."""

    class Filter(admin.SimpleListFilter):
        title = field
        parameter_name = field

        def lookups(self, request, model_admin):
            return [(value, value) for value in values]

        def queryset(self, request, queryset):
            return queryset.filter(**{field: self.value()}) if self.value() else queryset

    return Filter


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdmin):
    """Read-only for everyone, superusers included: the log is append-only.

    The audit log page (/audit/) is the fast way to read it; this changelist counts rows.
    """

    list_display = ("id", "created_at", "actor_username", "action", "connection_name", "outcome")
    list_filter = (
        _fixed_choices_filter("action", audit_review.ACTIONS),
        _fixed_choices_filter("outcome", audit_review.OUTCOMES),
    )
    show_full_result_count = False


@admin.register(AuditCheckpoint)
class AuditCheckpointAdmin(ReadOnlyAdmin):
    """Positions up to which verify_audit_chain found the chain intact (append-only)."""

    list_display = ("seq", "hash", "created_at")


@admin.register(OidcIdentity)
class OidcIdentityAdmin(admin.ModelAdmin):
    """Who signs in with the identity provider, by its subject. Made by the first sign-in;
    deleting one unlinks the user (the next sign-in of that subject makes a new user)."""

    list_display = ("user", "sub", "issuer", "created_at")
    search_fields = ("user__username", "sub")

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(ConnectionRequest)
class ConnectionRequestAdmin(ReadOnlyAdmin):
    """Viewable; every change goes through the workflow so that it is audited."""

    list_display = ("name", "kind", "authorization_type", "status", "requester", "created_at")
    list_filter = ("kind", "status", "authorization_type")
    search_fields = ("name",)


@admin.register(Connection)
class ConnectionAdmin(ReadOnlyAdmin):
    """Viewable; every change goes through the workflow so that it is audited."""

    list_display = ("name", "target", "state", "managed", "modified_at", "checked_at")
    list_filter = ("target", "state", "managed", "deauthorized_by_aws", "changed_outside")
    search_fields = ("name", "arn")


@admin.register(DocumentRevision)
class DocumentRevisionAdmin(ReadOnlyAdmin):
    list_display = ("request", "number", "author", "created_at")


@admin.register(Target)
class TargetAdmin(admin.ModelAdmin):
    """Accounts and Regions this app sees; a role to assume, or the app's own credentials."""

    list_display = ("name", "account_id", "region", "role_arn", "is_default")
    filter_horizontal = ("approver_groups",)
    readonly_fields = ("sweep_owner", "sweep_lease_until")


@admin.register(Sweep)
class SweepAdmin(ReadOnlyAdmin):
    list_display = ("target", "finished_at", "ok", "error")
    list_filter = ("ok", "target")


@admin.register(Scope)
class ScopeAdmin(admin.ModelAdmin):
    """What each requester group may reference in Vault, and where its secrets may go."""

    list_display = ("group", "path_prefixes", "allowed_hosts")


@admin.register(SecretHost)
class SecretHostAdmin(ReadOnlyAdmin):
    list_display = ("host", "first_at", "first_request")


@admin.register(Notification)
class NotificationAdmin(ReadOnlyAdmin):
    """The outbox: what was written, to whom, and whether it went out (failures with why)."""

    list_display = ("created_at", "kind", "recipient", "group", "channel", "status", "attempts",
                    "last_error")  # fmt: skip
    list_filter = ("status", "channel", "kind")
    search_fields = ("subject",)
