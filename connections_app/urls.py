from django.urls import path

from . import views

urlpatterns = [
    path("", views.home, name="home"),
    path("healthz", views.healthz, name="healthz"),
    path("status/", views.status, name="status"),
    path("requests/new/", views.request_new, name="request_new"),
    path("requests/mine/", views.request_mine, name="request_mine"),
    path("requests/<int:pk>/", views.request_detail, name="request_detail"),
    path("requests/<int:pk>/edit/", views.request_edit, name="request_edit"),
    path("requests/<int:pk>/cancel/", views.request_cancel, name="request_cancel"),
    path("requests/<int:pk>/approve/", views.request_approve, name="request_approve"),
    path("requests/<int:pk>/reject/", views.request_reject, name="request_reject"),
    path("requests/<int:pk>/retry/", views.request_retry, name="request_retry"),
    path("vault/check/", views.reference_check, name="reference_check"),
    path("approvals/", views.approval_queue, name="approval_queue"),
    path("connections/", views.connection_list, name="connection_list"),
    path("connections/<int:pk>/", views.connection_detail, name="connection_detail"),
    path("connections/<int:pk>/refresh/", views.connection_refresh, name="connection_refresh"),
    path("connections/<int:pk>/update/", views.connection_update, name="connection_update"),
    path(
        "connections/<int:pk>/reauthorize/",
        views.connection_update,
        {"kind": "reauthorize"},
        name="connection_reauthorize",
    ),
    path(
        "connections/<int:pk>/adopt/",
        views.connection_update,
        {"kind": "adopt"},
        name="connection_adopt",
    ),
    path("connections/<int:pk>/rotate/", views.connection_rotate, name="connection_rotate"),
    path(
        "connections/<int:pk>/deauthorize/",
        views.connection_remove,
        {"kind": "deauthorize"},
        name="connection_deauthorize",
    ),
    path(
        "connections/<int:pk>/delete/",
        views.connection_remove,
        {"kind": "delete"},
        name="connection_delete",
    ),
    path("notifications/", views.notifications, name="notifications"),
    path("audit/", views.audit_list, name="audit_list"),
    path("audit/<int:pk>/", views.audit_detail, name="audit_detail"),
    path("audit/export.csv", views.audit_export, {"fmt": "csv"}, name="audit_export_csv"),
    path("audit/export.jsonl", views.audit_export, {"fmt": "jsonl"}, name="audit_export_jsonl"),
    path("audit/secrets/", views.audit_secret_uses, name="audit_secret_uses"),
]
