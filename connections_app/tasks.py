"""The task worker's jobs (django-q2, ORM broker): each one a thin call into the services.

Schedules (Django admin, Django Q, Scheduled tasks) are made by migrations and run them:
`sweep_all` every SWEEP_MINUTES, `follow_states` every minute, `expire` and `checkpoint` every
five minutes.
"""

from __future__ import annotations

from django_q.tasks import async_task

from . import checkpoints, notify, services
from .models import Target


def sweep_all() -> int:
    """One sweep task per target, so that targets are swept side by side and one that fails
    (a role that cannot be assumed) holds up no other."""
    targets = list(Target.objects.values_list("pk", "name"))
    for pk, name in targets:
        async_task(sweep, pk, task_name=f"sweep {name}", group="sweeps")
    return len(targets)


def sweep(target_id: int) -> str:
    swept = services.sweep_target(target_id)
    if swept is None:
        return "skipped: another worker is sweeping this target"
    return "ok" if swept.ok else f"failed: {swept.error}"


def follow_states() -> int:
    """Connections in a passing state (UPDATING, DELETING, ...), until they settle."""
    return len(services.connections_refresh_passing())


def expire() -> int:
    return services.requests_expire_due()


def checkpoint() -> str:
    """Sign and store the audit chain's head when N events or M minutes have passed."""
    signed = checkpoints.checkpoint_if_due()
    return f"signed at event {signed.seq}" if signed else "not due"


def send_notifications() -> dict:
    """Send what the outbox holds, with retries (a message a dead sender held goes again)."""
    return notify.send_due()


def remind() -> int:
    """Daily: each approver, what has waited for them over a day."""
    return notify.remind_approvers()


def last_calls() -> int:
    """Hourly: changes about to expire, once each, to their approvers."""
    return notify.last_calls()
