"""Signed checkpoints of the audit chain, kept where the database cannot reach them.

The chain's hashes are unkeyed and its head lives in the same database, so whoever controls the
database can rewrite events and recompute every hash after them. A checkpoint is the head's
position and hash, with the time, signed by a Vault/OpenBao Transit key the app may use but never
export, and written to a Vault KV v2 store the app may add to but never change or delete
(CloudTrail's signed digest files are the model). `verify_audit_chain` checks every stored
checkpoint's signature with the key's public key and the database against them.

A checkpoint is due after AUDIT_CHECKPOINT_EVENTS events or AUDIT_CHECKPOINT_MINUTES minutes,
whichever comes first. Appends never call Vault: after an append commits, `after_commit` looks
at the database's copy of the newest checkpoint and, when one is due, signs in a background
thread; `checkpoint_if_due` (the task worker's and `audit_checkpoint --if-due`'s) asks the store.
Before signing, the chain from the newest stored checkpoint to the head is verified, so the app
never signs a rewritten chain.
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from django.conf import settings
from django.db import connections
from django.utils import timezone

from . import audit, vault
from .models import AuditChainHead, AuditCheckpoint, AuditEvent

log = logging.getLogger(__name__)

FORMAT = "eventbridge-connections audit checkpoint v1"
# Entries are named by the event number, zero-padded so that names sort as numbers do.
_NAME = re.compile(r"[0-9]{20}")
_SIGNATURE = re.compile(r"vault:v([0-9]+):([A-Za-z0-9+/=]+)")
# After a failed background checkpoint, appends in this process wait this long to try again.
RETRY_AFTER_SECONDS = 60.0


class CheckpointError(Exception):
    """A checkpoint cannot be made or trusted; the message says why and what to do."""

    def __init__(self, message: str, *, code: str):
        super().__init__(message)
        self.message = message
        self.code = code


@dataclass(frozen=True)
class Checkpoint:
    seq: int
    hash: str
    signed_at: str  # ISO 8601 UTC, to the second
    signature: str  # vault:v<key version>:<base64>

    @property
    def name(self) -> str:
        return f"{self.seq:020d}"

    @property
    def statement(self) -> bytes:
        return statement(self.seq, self.hash, self.signed_at)

    @property
    def time(self) -> datetime:
        return datetime.fromisoformat(self.signed_at)

    def fields(self) -> dict[str, str]:
        return {
            "seq": str(self.seq),
            "hash": self.hash,
            "signed_at": self.signed_at,
            "signature": self.signature,
        }


def statement(seq: int, last_hash: str, signed_at: str) -> bytes:
    """The bytes the Transit key signs."""
    return f"{FORMAT}\nseq {seq}\nhash {last_hash}\nsigned_at {signed_at}\n".encode()


@dataclass
class Stored:
    """One entry of the store as read: its checkpoint, or what is wrong with it."""

    name: str
    checkpoint: Checkpoint | None = None
    problem: str = ""


def _store() -> tuple[str, str]:
    """The store's KV v2 mount and its path in that mount."""
    return settings.AUDIT_CHECKPOINT_MOUNT, settings.AUDIT_CHECKPOINT_PATH.strip("/")


def store_location(name: str = "") -> str:
    mount, path = _store()
    return f"{mount}/{path}/{name}" if name else f"{mount}/{path}"


def key_location() -> str:
    return f"{settings.AUDIT_TRANSIT_MOUNT}/keys/{settings.AUDIT_TRANSIT_KEY}"


def vault_policy() -> str:
    """The Vault policy (HCL) the app needs for checkpoints with the configured names."""
    transit, key = settings.AUDIT_TRANSIT_MOUNT, settings.AUDIT_TRANSIT_KEY
    mount, path = _store()
    return (
        "# Sign audit checkpoints with the Transit key and read its public keys; never export it.\n"
        f'path "{transit}/sign/{key}" {{ capabilities = ["update"] }}\n'
        f'path "{transit}/keys/{key}" {{ capabilities = ["read"] }}\n'
        "# The checkpoint store (KV v2): add entries and read them; never change or delete one\n"
        "# (KV v2 asks for update, not create, when the entry already exists).\n"
        f'path "{mount}/data/{path}/*" {{ capabilities = ["create", "read"] }}\n'
        f'path "{mount}/metadata/{path}/*" {{ capabilities = ["list"] }}\n'
    )


# ---------------------------------------------------------------------------
# Reading the store and checking signatures


def _public_keys() -> dict[int, Ed25519PublicKey]:
    kind, keys = vault.transit_public_keys(settings.AUDIT_TRANSIT_MOUNT, settings.AUDIT_TRANSIT_KEY)
    if kind != "ed25519":
        raise CheckpointError(
            f"Transit key {key_location()} is of type {kind}; audit checkpoints need an ed25519 "
            "key (bao write -f <mount>/keys/<name> type=ed25519).",
            code="signing_key_type",
        )
    try:
        return {version: Ed25519PublicKey.from_public_bytes(raw) for version, raw in keys.items()}
    except ValueError:
        raise CheckpointError(
            f"Vault's public key of {key_location()} is not an ed25519 key.",
            code="signing_key_type",
        ) from None


def _checked(name: str, answer: tuple[dict, int] | None, keys: dict) -> Stored:
    """A store entry with its signature checked against the Transit key's public keys."""
    entry = Stored(name)
    if not _NAME.fullmatch(name):
        entry.problem = "it is not a checkpoint's name (the app names them by event number)"
        return entry
    if answer is None:
        entry.problem = "its data was deleted from the store"
        return entry
    data, version = answer
    if version != 1:
        entry.problem = f"it was overwritten in the store (it is at version {version})"
        return entry
    try:
        checkpoint = Checkpoint(
            int(data["seq"]), str(data["hash"]), str(data["signed_at"]), str(data["signature"])
        )
        if checkpoint.time.tzinfo is None:  # the app writes UTC times with their offset
            raise ValueError(checkpoint.signed_at)
    except (KeyError, TypeError, ValueError):
        entry.problem = "it is not a checkpoint (fields missing or malformed)"
        return entry
    if checkpoint.name != name:
        entry.problem = f"its name says event {int(name)}, but it records event {checkpoint.seq}"
        return entry
    match = _SIGNATURE.fullmatch(checkpoint.signature)
    if match is None:
        entry.problem = "its signature is not a Transit signature"
        return entry
    version = int(match.group(1))
    if version not in keys:
        entry.problem = (
            f"it claims version {version} of Transit key {key_location()}, which has no such "
            "version"
        )
        return entry
    try:
        keys[version].verify(base64.b64decode(match.group(2), validate=True), checkpoint.statement)
    except (InvalidSignature, binascii.Error, ValueError):
        entry.problem = (
            f"its signature does not verify with Transit key {key_location()} (version "
            f"{version}): it was altered, or signed with another key"
        )
        return entry
    entry.checkpoint = checkpoint
    return entry


def stored_checkpoints() -> list[Stored]:
    """Every entry of the store, oldest first, each with its signature checked."""
    mount, path = _store()
    names = sorted(vault.store_list(mount, path))
    keys = _public_keys()
    answers = vault.store_read_many(mount, [f"{path}/{name}" for name in names])
    return [_checked(name, answer, keys) for name, answer in zip(names, answers, strict=True)]


def newest_checkpoint() -> Checkpoint | None:
    """The newest stored checkpoint, its signature checked; a forged one is an error."""
    mount, path = _store()
    names = sorted(vault.store_list(mount, path))
    if not names:
        return None
    name = names[-1]
    entry = _checked(name, vault.store_read(mount, f"{path}/{name}"), _public_keys())
    if entry.problem:
        raise _forged(entry)
    return entry.checkpoint


def _forged(entry: Stored) -> CheckpointError:
    return CheckpointError(
        f"{store_location(entry.name)}: {entry.problem}. Only this app writes to the checkpoint "
        "store, and it never changes or deletes an entry: find out who did before trusting "
        "the audit log.",
        code="forged_checkpoint",
    )


# ---------------------------------------------------------------------------
# Making checkpoints


def _head() -> tuple[int, str]:
    head = AuditChainHead.objects.filter(id=1).values_list("last_seq", "last_hash").first()
    return head or (0, audit.GENESIS)


def _due(head_seq: int, last_seq: int, last_time: datetime | None) -> bool:
    """Unsigned events, and N of them or M minutes since the last checkpoint (or first event)."""
    if head_seq <= last_seq:
        return False
    if head_seq - last_seq >= settings.AUDIT_CHECKPOINT_EVENTS:
        return True
    since = last_time
    if since is None:
        since = AuditEvent.objects.filter(id=1).values_list("created_at", flat=True).first()
    minutes = timedelta(minutes=settings.AUDIT_CHECKPOINT_MINUTES)
    return since is None or timezone.now() - since >= minutes


def checkpoint_if_due() -> Checkpoint | None:
    """Sign the head when a checkpoint is due by the store's newest one; else None.

    Safe to call from several processes at once: each position is written once (the store
    refuses a second write), and a caller that loses the race returns the winner's checkpoint.
    """
    newest = newest_checkpoint()
    head = _head()
    _behind(head[0], newest)
    if not _due(head[0], newest.seq if newest else 0, newest.time if newest else None):
        return None
    return _sign(head, newest)


def checkpoint_now() -> Checkpoint | None:
    """Sign the head now, unless the newest stored checkpoint already covers it (then None)."""
    newest = newest_checkpoint()
    head = _head()
    _behind(head[0], newest)
    if head[0] == (newest.seq if newest else 0):
        return None
    return _sign(head, newest)


def _behind(head_seq: int, newest: Checkpoint | None) -> None:
    if newest is not None and head_seq < newest.seq:
        raise CheckpointError(
            f"Refusing to sign: the chain's head is at event {head_seq}, but the checkpoint "
            f"signed at {newest.signed_at} recorded event {newest.seq}: events were removed from "
            "the database. Run manage.py verify_audit_chain.",
            code="chain_behind",
        )


def _sign(head: tuple[int, str], newest: Checkpoint | None) -> Checkpoint:
    seq, last_hash = head
    verified = _verify_since(newest, seq, last_hash)
    signed_at = timezone.now().isoformat(timespec="seconds")
    signature = vault.transit_sign(
        settings.AUDIT_TRANSIT_MOUNT,
        settings.AUDIT_TRANSIT_KEY,
        statement(seq, last_hash, signed_at),
    )
    checkpoint = Checkpoint(seq, last_hash, signed_at, signature)
    mount, path = _store()
    if not vault.store_create(mount, f"{path}/{checkpoint.name}", checkpoint.fields()):
        # Another process signed this position first: theirs stands, if it is for this hash.
        entry = _checked(
            checkpoint.name,
            vault.store_read(mount, f"{path}/{checkpoint.name}"),
            _public_keys(),
        )
        if entry.problem:
            raise _forged(entry)
        if entry.checkpoint.hash != last_hash:
            raise CheckpointError(
                f"The checkpoint of event {seq} already in the store records another hash than "
                "the database holds now: the chain changed. Run manage.py verify_audit_chain.",
                code="chain_diverged",
            )
        checkpoint = entry.checkpoint
    audit.checkpoint_record(verified)  # the database's copy: a speed-up, never trusted
    return checkpoint


def _verify_since(newest: Checkpoint | None, seq: int, last_hash: str) -> audit.ChainResult:
    """The database must extend the newest signed checkpoint up to the head, or nothing is
    signed: the app never vouches for a chain rewritten below a checkpoint."""
    after, after_hash = (newest.seq, newest.hash) if newest else (0, audit.GENESIS)
    if after:
        stored = AuditEvent.objects.filter(id=after).values_list("hash", flat=True).first()
        if stored != after_hash:
            raise CheckpointError(
                f"Refusing to sign: event {after} no longer has the hash the checkpoint signed at "
                f"{newest.signed_at} recorded. Run manage.py verify_audit_chain.",
                code="chain_diverged",
            )
    result = audit.verify_range(after=after, after_hash=after_hash, up_to=seq)
    if not result.ok:
        raise CheckpointError(
            f"Refusing to sign: the chain is broken at event {result.bad_event}: {result.reason}. "
            "Run manage.py verify_audit_chain.",
            code="chain_broken",
        )
    if (result.last_seq, result.last_hash) != (seq, last_hash):
        raise CheckpointError(
            f"Refusing to sign: the chain ends at event {result.last_seq} with another hash than "
            f"its head (event {seq}) records. Run manage.py verify_audit_chain.",
            code="chain_broken",
        )
    return result


# ---------------------------------------------------------------------------
# After an append commits: a cheap look at the database, the signing in the background

_state_lock = threading.Lock()
_thread: threading.Thread | None = None
_retry_at = 0.0


def after_commit(seq: int) -> None:
    """Start a checkpoint in the background when the database's copy of the newest one says it
    is due. Called by `audit.append` once its transaction has committed; never waits for Vault
    and never raises (an approval must not fail because signing does)."""
    try:
        if time.monotonic() < _retry_at or (_thread is not None and _thread.is_alive()):
            return
        last = (
            AuditCheckpoint.objects.filter(seq__lte=seq)
            .order_by("-seq")
            .values_list("seq", "created_at")
            .first()
        )
        if _due(seq, *(last or (0, None))):
            _start()
    except Exception as exc:  # noqa: BLE001 - the append has committed; say so and go on
        log.warning("Audit checkpoint check failed after an append: %s", type(exc).__name__)


def _start() -> None:
    global _thread
    with _state_lock:
        if _thread is not None and _thread.is_alive():
            return
        _thread = threading.Thread(target=_run, name="audit-checkpoint", daemon=True)
        _thread.start()


def _run() -> None:
    global _retry_at
    try:
        made = checkpoint_if_due()
        if made is not None:
            log.info("Audit checkpoint signed at event %s.", made.seq)
    except (CheckpointError, vault.VaultError) as exc:
        _retry_at = time.monotonic() + RETRY_AFTER_SECONDS
        log.error("Audit checkpoint not signed: %s", exc.message)
    except Exception:
        _retry_at = time.monotonic() + RETRY_AFTER_SECONDS
        log.exception("Audit checkpoint failed")
    finally:
        connections.close_all()  # this thread's own connections


def join_background(timeout: float | None = None) -> None:
    """Wait for a background checkpoint started by `after_commit`, if one is running."""
    thread = _thread
    if thread is not None:
        thread.join(timeout)


def reset() -> None:
    """Forget a failure's back-off (tests, or after the operator fixed Vault)."""
    global _retry_at
    _retry_at = 0.0


# ---------------------------------------------------------------------------
# Verifying the database against the store


@dataclass
class Proof:
    chain: audit.ChainResult | None  # None when the store itself holds forged entries
    checkpoints: list[Checkpoint] = field(default_factory=list)  # sound ones, oldest first
    forged: list[Stored] = field(default_factory=list)

    @property
    def newest(self) -> Checkpoint | None:
        return self.checkpoints[-1] if self.checkpoints else None

    def forged_message(self, shown: int = 3) -> str:
        text = " ".join(_forged(entry).message for entry in self.forged[:shown])
        more = len(self.forged) - shown
        return f"{text} (And {more} more entries like these.)" if more > 0 else text


def verify_log(*, chunk: int = 5000) -> Proof:
    """Check every stored checkpoint's signature, then the whole chain against them."""
    stored = stored_checkpoints()
    proof = Proof(
        chain=None,
        checkpoints=[entry.checkpoint for entry in stored if not entry.problem],
        forged=[entry for entry in stored if entry.problem],
    )
    if proof.forged:
        return proof
    signed = {c.seq: (c.hash, c.signed_at) for c in proof.checkpoints}
    proof.chain = audit.verify_chain(chunk=chunk, signed=signed)
    return proof


def due_after(proof: Proof) -> bool:
    """Is a checkpoint due for the chain `proof` verified?"""
    newest = proof.newest
    last_seq = proof.chain.last_seq if proof.chain else 0
    return _due(last_seq, newest.seq if newest else 0, newest.time if newest else None)
