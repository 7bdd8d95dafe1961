from __future__ import annotations

import uuid

from django.conf import settings
from django.core.validators import RegexValidator
from django.db import models
from django.utils import timezone


class Target(models.Model):
    """An AWS account and Region whose connections this app sees: through its own credentials
    (no role), or through a role it assumes with an external ID."""

    name = models.CharField(max_length=64, unique=True)
    account_id = models.CharField(
        max_length=12, blank=True, help_text="Filled in by the first sweep when left empty."
    )
    region = models.CharField(max_length=32)
    role_arn = models.CharField(
        max_length=2048,
        blank=True,
        help_text="Empty: this app's own credentials.",
        validators=[RegexValidator(r"^arn:aws[\w-]*:iam::\d{12}:role/[\w+=,.@/-]+$")],
    )
    # sts:AssumeRole's own rules for ExternalId (2-1224 characters of this set).
    external_id = models.CharField(
        max_length=1224,
        blank=True,
        validators=[RegexValidator(r"^[\w+=,.@:/-]{2,}$")],
        help_text="The external ID the role's trust policy requires (sts:ExternalId).",
    )
    # Only members of these groups (holding the approve permission) may approve its changes;
    # none: every approver may.
    approver_groups = models.ManyToManyField("auth.Group", blank=True, related_name="+")
    is_default = models.BooleanField(default=False)
    # The sweep's lease: several worker clusters never sweep one target at once.
    sweep_owner = models.CharField(max_length=64, blank=True)
    sweep_lease_until = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(
                fields=["is_default"], condition=models.Q(is_default=True), name="one_default"
            )
        ]

    def __str__(self) -> str:
        return self.name

    @classmethod
    def default(cls) -> Target:
        """The app's own credentials, account and Region (made by migration 0012, or here
        on first use of an emptied database)."""
        target, _ = cls.objects.get_or_create(
            is_default=True, defaults={"name": "default", "region": settings.AWS_REGION}
        )
        return target

    @property
    def label(self) -> str:
        return f"{self.name} ({self.account_id or 'own account'}, {self.region})"


class Scope(models.Model):
    """What one requester group may reference in Vault, and which hosts may receive its
    secrets (an OAuth authorization endpoint receives the client secret)."""

    group = models.OneToOneField("auth.Group", on_delete=models.CASCADE, related_name="scope")
    path_prefixes = models.TextField(
        help_text="One Vault path prefix a line, with its mount: secret/eventbridge/team-a/",
    )
    allowed_hosts = models.TextField(
        blank=True,
        help_text="One host a line that may receive these secrets (an OAuth authorization "
        "endpoint's host, e.g. auth.partner.example). None: no OAuth endpoint is allowed.",
    )

    class Meta:
        ordering = ["group__name"]

    def __str__(self) -> str:
        return f"scope of {self.group.name}"

    @property
    def prefixes(self) -> list[str]:
        return [line.strip() for line in self.path_prefixes.splitlines() if line.strip()]

    @property
    def hosts(self) -> set[str]:
        return {line.strip().lower() for line in self.allowed_hosts.splitlines() if line.strip()}


class SecretHost(models.Model):
    """A host that has received a secret through this app (an approval pushed a connection
    whose authorization endpoint is there): the approver's page marks the others "new"."""

    host = models.CharField(max_length=255, unique=True)
    first_request = models.BigIntegerField()
    first_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.host


class Sweep(models.Model):
    """One inventory sweep of one target, recorded whole when it ends (never half)."""

    target = models.ForeignKey(Target, on_delete=models.CASCADE, related_name="sweeps")
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField()
    ok = models.BooleanField()
    error = models.TextField(blank=True)
    figures = models.JSONField(default=dict)  # counts, AWS calls, Vault reads, flags raised

    class Meta:
        ordering = ["-finished_at"]
        indexes = [models.Index(fields=["target", "-finished_at"])]

    def __str__(self) -> str:
        return f"sweep of {self.target} at {self.finished_at:%Y-%m-%d %H:%M:%S}"


class Connection(models.Model):
    """One EventBridge connection made or managed here (or found by a sweep, unmanaged): what
    AWS last said of it, and the document last pushed to it (each secret as reference, the
    version pushed and its keyed fingerprint; never a value)."""

    # Where AWS moves a connection by itself after a change (private endpoints: many minutes).
    PASSING = ("CREATING", "UPDATING", "DELETING", "AUTHORIZING", "DEAUTHORIZING")
    DELETED = "DELETED"  # gone from AWS: the name is free again

    target = models.ForeignKey(Target, on_delete=models.PROTECT, related_name="connections")
    name = models.CharField(max_length=64)
    arn = models.CharField(max_length=1600, unique=True)
    authorization_type = models.CharField(max_length=32)
    # Made or adopted here (its document is known); False: found by a sweep, nobody's yet.
    managed = models.BooleanField(default=True)
    state = models.CharField(max_length=32)
    state_reason = models.CharField(max_length=512, blank=True)
    secret_arn = models.CharField(max_length=1600, blank=True)
    created_in_aws_at = models.DateTimeField(null=True, blank=True)
    modified_at = models.DateTimeField(null=True, blank=True)
    authorized_at = models.DateTimeField(null=True, blank=True)
    checked_at = models.DateTimeField(null=True, blank=True)
    document = models.JSONField(default=dict)  # as last pushed, redacted (DESIGN.md `redact`)
    pushed_at = models.DateTimeField(null=True, blank=True)
    # DEAUTHORIZED by AWS itself (a 401/407 from the partner, a failed OAuth refresh, KMS).
    deauthorized_by_aws = models.BooleanField(default=False)
    # Flags raised by sweeps, lowered by the next change made here.
    changed_outside = models.BooleanField(default=False)  # modified in AWS after our push
    deleted_outside = models.BooleanField(default=False)  # gone from AWS, not by a change here
    # Secrets whose Vault holds a newer version than the one pushed, or whose pushed version
    # was deleted or destroyed: [{"path", "vault", "pushed", "current", "why"}].
    drift = models.JSONField(default=list, blank=True)

    class Meta:
        ordering = ["name", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["target", "name"],
                condition=~models.Q(state="DELETED"),
                name="one_live_connection",
            )
        ]
        indexes = [
            models.Index(fields=["state", "name", "id"]),
            models.Index(fields=["target", "name", "id"]),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.state})"

    @property
    def gone(self) -> bool:
        return self.state in (self.DELETED, "DELETING")


# A create request holds its name while it may still become a connection (the Connection row
# holds it after that, until AWS deletes it).
HOLDS_NAME = models.Q(kind="create", status__in=["pending", "approved", "submitting"])
# A change still to be decided, submitted or closed: a connection has at most one.
OPEN_STATUSES = ["pending", "approved", "submitting", "failed"]


class ConnectionRequest(models.Model):
    """A change to one EventBridge connection, of one kind, decided by a second person.

    `document` holds Vault references, never values: for create, update and rotate the whole
    create_connection document; for deauthorize and delete just the connection's Name."""

    PENDING = "pending"
    APPROVED = "approved"
    SUBMITTING = "submitting"
    CREATED = "created"
    DONE = "done"
    FAILED = "failed"
    REJECTED = "rejected"
    CANCELLED = "cancelled"
    EXPIRED = "expired"
    STATUS_CHOICES = [
        (PENDING, "Pending approval"),
        (APPROVED, "Approved"),
        (SUBMITTING, "Submitting"),
        (CREATED, "Created"),
        (DONE, "Done"),
        (FAILED, "Failed"),
        (REJECTED, "Rejected"),
        (CANCELLED, "Cancelled"),
        (EXPIRED, "Expired"),
    ]
    SUCCEEDED = (CREATED, DONE)

    CREATE, UPDATE, ROTATE, DEAUTHORIZE, DELETE = (
        "create",
        "update",
        "rotate",
        "deauthorize",
        "delete",
    )
    KIND_CHOICES = [
        (CREATE, "Create"),
        (UPDATE, "Update"),
        (ROTATE, "Rotate"),
        (DEAUTHORIZE, "Deauthorize"),
        (DELETE, "Delete"),
    ]
    DOCUMENT_KINDS = (CREATE, UPDATE, ROTATE)  # kinds whose document is a whole connection
    HOLDS_NAME = HOLDS_NAME
    OPEN_STATUSES = OPEN_STATUSES

    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    kind = models.CharField(max_length=16, choices=KIND_CHOICES, default=CREATE)
    target = models.ForeignKey(Target, on_delete=models.PROTECT, related_name="changes")
    connection = models.ForeignKey(
        Connection, on_delete=models.PROTECT, null=True, blank=True, related_name="changes"
    )
    name = models.CharField(max_length=64, db_index=True)
    authorization_type = models.CharField(max_length=32, blank=True)
    requester = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="connection_requests"
    )
    status = models.CharField(max_length=16, choices=STATUS_CHOICES, default=PENDING)
    document = models.JSONField()
    document_hash = models.CharField(max_length=64)
    reason = models.TextField(blank=True)  # why deauthorize or delete (the requester's words)
    revision = models.PositiveIntegerField(default=1)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    expires_at = models.DateTimeField()

    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="decided_connection_requests",
    )
    decided_at = models.DateTimeField(null=True, blank=True)
    decision_comment = models.TextField(blank=True)
    approved_hash = models.CharField(max_length=64, blank=True)

    submit_started_at = models.DateTimeField(null=True, blank=True)
    submit_attempts = models.PositiveIntegerField(default=0)
    error_code = models.CharField(max_length=64, blank=True)
    error_message = models.TextField(blank=True)

    class Meta:
        ordering = ["created_at"]
        permissions = [
            ("approve_connectionrequest", "Can approve or reject connection requests"),
        ]
        indexes = [
            models.Index(fields=["status", "created_at"]),
            # The queue and the expiry sweep read only pending requests, on every queue visit.
            models.Index(
                fields=["created_at", "id"],
                condition=models.Q(status="pending"),
                name="pending_oldest_first",
            ),
            models.Index(
                fields=["expires_at"],
                condition=models.Q(status="pending"),
                name="pending_by_expiry",
            ),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["target", "name"], condition=HOLDS_NAME, name="one_live_request_per_name"
            ),
            models.UniqueConstraint(
                fields=["connection"],
                condition=models.Q(status__in=OPEN_STATUSES),
                name="one_open_change_per_connection",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} {self.name} ({self.get_status_display()})"

    @property
    def overdue(self) -> bool:
        """Pending past its time: shown as expired; the next action on it records the expiry."""
        return self.status == self.PENDING and self.expires_at <= timezone.now()

    @property
    def shown_status(self) -> str:
        return self.EXPIRED if self.overdue else self.status

    def get_shown_status_display(self) -> str:
        return dict(self.STATUS_CHOICES)[self.shown_status]

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STATUSES and not self.overdue

    @property
    def stale_at(self):
        """When a submission still running must have died (None if none is running)."""
        if self.status != self.SUBMITTING or self.submit_started_at is None:
            return None
        return self.submit_started_at + settings.SUBMIT_STALE_AFTER

    @property
    def retryable(self) -> bool:
        """Failed, or left submitting long enough that its attempt must have died."""
        stale_at = self.stale_at
        return self.status == self.FAILED or (stale_at is not None and stale_at <= timezone.now())

    @property
    def marker(self) -> str:
        """Carried in the connection's Description so a retry can recognise its own change."""
        return f"[eb-request:{self.public_id.hex[:16]}]"


class DocumentRevision(models.Model):
    """Every version of a request's document, kept when the requester edits it."""

    request = models.ForeignKey(
        ConnectionRequest, on_delete=models.CASCADE, related_name="revisions"
    )
    number = models.PositiveIntegerField()
    document = models.JSONField()
    document_hash = models.CharField(max_length=64)
    author = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["request", "number"]
        constraints = [
            models.UniqueConstraint(fields=["request", "number"], name="unique_revision_number")
        ]

    def __str__(self) -> str:
        return f"{self.request.name} r{self.number}"


class AuditChainHead(models.Model):
    """One row: the newest event's position and hash. Locking it serialises appends."""

    id = models.PositiveSmallIntegerField(primary_key=True, default=1)
    last_seq = models.BigIntegerField(default=0)
    last_hash = models.CharField(max_length=64, default="0" * 64)

    def __str__(self) -> str:
        return f"audit head at {self.last_seq}"


class AppendOnlyError(Exception):
    pass


class AuditEventQuerySet(models.QuerySet):
    def update(self, **kwargs):
        raise AppendOnlyError("Audit events cannot be changed.")

    def delete(self):
        raise AppendOnlyError("Audit events cannot be deleted.")


class AuditEvent(models.Model):
    """An append-only, hash-chained record of one step.

    `id` is the position in the chain (1, 2, 3, ... with no gaps, given out under the head's
    lock); `data` is canonical JSON stored as text, so verifying never re-serialises it.
    """

    id = models.BigIntegerField(primary_key=True)
    created_at = models.DateTimeField(db_index=True)
    # Plain ids, not foreign keys: deleting a user or request must never touch the log.
    actor_id = models.BigIntegerField(null=True, blank=True)
    actor_username = models.CharField(max_length=150, blank=True)
    action = models.CharField(max_length=64)
    request_id = models.BigIntegerField(null=True, blank=True, db_index=True)
    connection_name = models.CharField(max_length=64, blank=True)
    outcome = models.CharField(max_length=16)
    arn = models.CharField(max_length=1600, blank=True)
    connection_state = models.CharField(max_length=32, blank=True)
    data = models.TextField()
    prev_hash = models.CharField(max_length=64)
    hash = models.CharField(max_length=64, unique=True)

    objects = AuditEventQuerySet.as_manager()

    class Meta:
        ordering = ["-id"]
        indexes = [
            models.Index(fields=["action", "id"]),
            models.Index(fields=["connection_name", "id"]),
            models.Index(fields=["actor_username", "id"]),
            models.Index(fields=["outcome", "id"]),
            models.Index(fields=["arn", "id"]),
        ]

    def __str__(self) -> str:
        return f"#{self.id} {self.action}"

    def save(self, *args, **kwargs):
        if not self._state.adding:
            raise AppendOnlyError("Audit events cannot be changed.")
        kwargs["force_insert"] = True
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise AppendOnlyError("Audit events cannot be deleted.")


class AuditCheckpoint(models.Model):
    """The database's copy of a signed checkpoint (append-only; the signed one is in Vault).

    The event page verifies from the nearest checkpoint instead of from the first event, and
    appends look here to see whether a new one is due. Nothing else trusts these rows: whoever
    controls the database can rewrite them; verify_audit_chain reads the signed ones.
    """

    seq = models.BigIntegerField(unique=True)
    hash = models.CharField(max_length=64)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = AuditEventQuerySet.as_manager()

    class Meta:
        ordering = ["-seq"]

    def __str__(self) -> str:
        return f"chain intact up to {self.seq}"

    def save(self, *args, **kwargs):
        if not self._state.adding:
            raise AppendOnlyError("Audit checkpoints cannot be changed.")
        kwargs["force_insert"] = True
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise AppendOnlyError("Audit checkpoints cannot be deleted.")


class AuditSecretUse(models.Model):
    """Index of the fingerprinted secret leaves in events, to find a value's other uses.

    Derived from the events' data (which alone is hashed), so it can always be rebuilt.
    """

    event = models.ForeignKey(
        AuditEvent,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        db_index=False,  # looked up by fingerprint or reference only
        related_name="secret_uses",
    )
    path = models.CharField(max_length=300)
    reference = models.CharField(max_length=1024)
    version = models.IntegerField(null=True, blank=True)
    fingerprint = models.CharField(max_length=80)

    class Meta:
        ordering = ["-event_id"]
        indexes = [
            models.Index(fields=["fingerprint", "event"]),
            models.Index(fields=["reference", "event"]),
        ]

    def __str__(self) -> str:
        return f"#{self.event_id} {self.path}"


class Notification(models.Model):
    """One message to one person on one channel: written in the transaction of the event it
    announces (an outbox), sent by the worker. Never a secret value or fingerprint in it."""

    EMAIL, APPRISE = "email", "apprise"
    CHANNELS = [(EMAIL, "Email"), (APPRISE, "Chat (Apprise)")]
    PENDING, SENDING, SENT, FAILED = "pending", "sending", "sent", "failed"
    STATUSES = [(PENDING, "Waiting"), (SENDING, "Sending"), (SENT, "Sent"), (FAILED, "Failed")]

    # A person (email), or a group's chat channel (Apprise, NOTIFY_APPRISE).
    recipient = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="notifications",
    )
    group = models.ForeignKey("auth.Group", on_delete=models.CASCADE, null=True, blank=True)
    channel = models.CharField(max_length=16, choices=CHANNELS, default=EMAIL)
    kind = models.CharField(max_length=64)  # e.g. change.waiting, connection.drift
    # Once per recipient, channel and key: a reminder or a last call is never sent twice.
    key = models.CharField(max_length=200)
    subject = models.CharField(max_length=200)
    body = models.TextField()
    link = models.CharField(max_length=500, blank=True)  # the page, as an absolute URL
    event_id = models.BigIntegerField(null=True, blank=True)  # the audit event it announces
    message_id = models.CharField(max_length=200)  # the same on every attempt (email)
    status = models.CharField(max_length=16, choices=STATUSES, default=PENDING)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(default=timezone.now)
    last_error = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["recipient", "channel", "key"], name="one_notification_per_key"
            ),
            models.UniqueConstraint(
                fields=["group", "channel", "key"], name="one_group_notification_per_key"
            ),
        ]
        indexes = [
            models.Index(fields=["status", "next_attempt_at"]),
            models.Index(fields=["recipient", "-created_at"]),
        ]

    def __str__(self) -> str:
        to = self.recipient_id or f"group {self.group_id}"
        return f"{self.kind} to {to} ({self.status})"


class NotificationMute(models.Model):
    """A channel someone does not want (approvers' reminders come all the same)."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE)
    channel = models.CharField(max_length=16, choices=Notification.CHANNELS)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "channel"], name="one_mute_per_channel")
        ]

    def __str__(self) -> str:
        return f"{self.user_id} mutes {self.channel}"


# Single sign-on identities live beside the sign-in code that uses them.
from .oidc_identity import OidcIdentity  # noqa: E402,F401
