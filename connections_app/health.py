"""The health probe: database, Vault and AWS, each reachable and usable.

/healthz is anonymous, so its answer is cached for HEALTH_CACHE_SECONDS per process: however
much traffic it gets, each process asks Vault and AWS at most once per period. One probe runs
at a time; callers arriving meanwhile get the previous answer, or wait for this one if there is
none yet.
"""

from __future__ import annotations

import threading
import time

from django.conf import settings
from django.db import connection

from . import eventbridge, vault

_probing = threading.Lock()
_last: tuple[float, tuple[bool, dict]] | None = None  # (monotonic time, answer)


def probe() -> tuple[bool, dict]:
    """(all fine, details) now, asking each system; never raises."""
    try:
        connection.ensure_connection()
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        database = {"ok": True}
    except Exception:  # noqa: BLE001 - any database failure is "not ok", without details
        database = {"ok": False}
    vault_status = vault.health()
    vault_status["ok"] = bool(
        vault_status["reachable"] and not vault_status["sealed"] and vault_status["authenticated"]
    )
    aws = eventbridge.health()
    aws["ok"] = aws["reachable"]
    ok = database["ok"] and vault_status["ok"] and aws["ok"]
    return ok, {
        "status": "ok" if ok else "fail",
        "database": database,
        "vault": vault_status,
        "aws": aws,
    }


def _fresh(last) -> tuple[bool, dict] | None:
    if last is not None and time.monotonic() - last[0] < settings.HEALTH_CACHE_SECONDS:
        return last[1]
    return None


def cached_probe() -> tuple[bool, dict]:
    """probe()'s answer, at most HEALTH_CACHE_SECONDS old. Do not change what it returns."""
    global _last
    last = _last
    answer = _fresh(last)
    if answer is not None:
        return answer
    # With an answer to give meanwhile, nobody waits for a slow probe.
    if not _probing.acquire(blocking=last is None):
        return last[1]
    try:
        answer = _fresh(_last)  # another caller may have finished a probe while this one waited
        if answer is None:
            answer = probe()
            _last = (time.monotonic(), answer)  # timed from its end: a slow probe still counts
        return answer
    finally:
        _probing.release()


def reset() -> None:
    """Forget the cached answer (tests, after changing what the probe talks to)."""
    global _last
    _last = None
