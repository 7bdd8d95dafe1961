from django.contrib import admin

from .models import AuditEvent, ConnectionRequest, DocumentRevision


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdmin):
    """Read-only for everyone, superusers included: the log is append-only."""

    list_display = ("id", "created_at", "actor_username", "action", "connection_name", "outcome")
    list_filter = ("action", "outcome")
    show_full_result_count = False


@admin.register(ConnectionRequest)
class ConnectionRequestAdmin(ReadOnlyAdmin):
    """Viewable; every change goes through the workflow so that it is audited."""

    list_display = ("name", "authorization_type", "status", "requester", "created_at")
    list_filter = ("status", "authorization_type")
    search_fields = ("name",)


@admin.register(DocumentRevision)
class DocumentRevisionAdmin(ReadOnlyAdmin):
    list_display = ("request", "number", "author", "created_at")
