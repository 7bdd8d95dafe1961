"""Vault / OpenBao: the only module that imports hvac.

Secret values read here live in memory for one call and are never logged, stored or shown.
"""

from __future__ import annotations

import base64
import logging
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import hvac
import hvac.exceptions
import requests
from django.conf import settings
from django.views.decorators.debug import sensitive_variables

log = logging.getLogger(__name__)


class VaultError(Exception):
    """A Vault problem with a message a person can act on (never a secret value)."""

    code = "vault_error"

    def __init__(self, message: str, *, code: str | None = None):
        super().__init__(message)
        self.message = message
        if code:
            self.code = code


class VaultUnavailable(VaultError):
    code = "vault_unreachable"


class VaultSealed(VaultError):
    code = "vault_sealed"


class VaultPermissionDenied(VaultError):
    code = "permission_denied"


class InvalidReference(VaultError):
    """The reference itself is wrong: refused before any Vault call."""

    code = "invalid_reference"


class SecretNotFound(VaultError):
    code = "not_found"


# ---------------------------------------------------------------------------
# References: "mount/path#key" or "mount/path#key@version"

_PATH_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._\-/]*")
_KEY_RE = re.compile(r"[A-Za-z0-9._\-]+")
_VERSION_RE = re.compile(r"[0-9]+")
# KV v2 versions are int64 on the server; a larger number is an error there, not a miss.
_MAX_VERSION = 2**63 - 1
MAX_REFERENCE = 1024
# Mounts a reference may never address: Vault's own system, auth and identity backends.
_FORBIDDEN_PREFIXES = ("sys", "auth", "identity", "cubbyhole")


@dataclass(frozen=True)
class Reference:
    """One Vault reference: parsed once where text enters (a form, a stored document)."""

    path: str
    key: str
    version: int | None = None

    def __str__(self) -> str:
        suffix = f"@{self.version}" if self.version is not None else ""
        return f"{self.path}#{self.key}{suffix}"

    @property
    def secret(self) -> str:
        """mount/path#key: the reference without its version."""
        return f"{self.path}#{self.key}"

    @property
    def leaf(self) -> dict:
        """The reference as a request document stores it."""
        return {"vault": self.secret, "version": self.version}

    @classmethod
    def from_leaf(cls, leaf: dict) -> Reference:
        """A stored document's reference leaf ({"vault": "mount/path#key", "version": n})."""
        ref = parse_reference(leaf["vault"])
        return cls(ref.path, ref.key, leaf.get("version"))


def parse_reference(text: str) -> Reference:
    """Parse `mount/path#key[@version]`, refusing anything that could leave its mount."""
    text = (text or "").strip()
    if not text:
        raise InvalidReference("Enter a Vault reference such as secret/app/partner#password.")
    if len(text) > MAX_REFERENCE:  # as the form's own limit, before anything else is done
        raise InvalidReference(
            f"A Vault reference is at most {MAX_REFERENCE} characters.", code="too_long"
        )
    if text.startswith("/"):
        raise InvalidReference(
            "A Vault reference starts with its mount, not with “/”.", code="leading_slash"
        )
    path, _, rest = text.partition("#")
    key, at, version_text = rest.partition("@")
    if not key:
        raise InvalidReference(
            "Add the key after “#”, for example secret/app/partner#password.", code="missing_key"
        )
    segments = path.split("/")
    # ".." anywhere, not only as a whole segment: nothing legitimate needs it, and HTTP
    # clients normalise dot segments in ways that differ from Vault's own path handling.
    if ".." in path or "." in segments:
        raise InvalidReference("A Vault reference may not contain “..” or “.”.", code="path_escape")
    if segments[0].lower() in _FORBIDDEN_PREFIXES:
        raise InvalidReference(
            f"References into “{segments[0]}/” are not allowed: use a KV secrets mount.",
            code="forbidden_mount",
        )
    version: int | None = None
    if at:
        if not _VERSION_RE.fullmatch(version_text) or not 1 <= int(version_text) <= _MAX_VERSION:
            raise InvalidReference(
                "A version is a whole number from 1, as in secret/app/partner#password@2.",
                code="bad_version",
            )
        version = int(version_text)
    if (
        not _PATH_RE.fullmatch(path)
        or not _KEY_RE.fullmatch(key)
        or "" in segments
        or len(segments) < 2
    ):
        raise InvalidReference(
            "Use the form mount/path#key or mount/path#key@version "
            "(letters, digits, “.”, “_”, “-” and “/”).",
            code="bad_format",
        )
    return Reference(path, key, version)


@dataclass(frozen=True)
class SecretInfo:
    """What may be shown about a secret: never its value or length."""

    reference: Reference
    mount: str
    kv_version: int
    version: int | None  # the version actually read (None on KV v1, which has none)
    updated: str | None  # created_time of that version (KV v2 only)
    fingerprint: str = ""  # keyed digest of the value, when the caller asked for one


@dataclass(frozen=True)
class Resolution:
    info: SecretInfo
    value: str

    def __repr__(self) -> str:  # keeps the value out of tracebacks and debug output
        return f"Resolution({self.info.reference}, version={self.info.version})"


# ---------------------------------------------------------------------------
# The client: one per process, logging in again when its token has expired or been revoked


class _Client:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._client: hvac.Client | None = None
        self._expires_at: float | None = None

    @property
    def auth_method(self) -> str:
        if settings.VAULT_ROLE_ID:
            return "approle"
        if settings.VAULT_K8S_ROLE:
            return "kubernetes"
        return "token"

    def _new(self) -> hvac.Client:
        verify: bool | str = settings.VAULT_CACERT or True
        # requests would raise a bare OSError on every call: say what is wrong once, clearly.
        if settings.VAULT_CACERT and not Path(settings.VAULT_CACERT).exists():
            raise VaultError(
                f"VAULT_CACERT names no file or directory: {settings.VAULT_CACERT}.",
                code="cacert_missing",
            )
        # With trust_env on, requests reads the proxy variables and ~/.netrc again on every call
        # (about 1 ms here, a third of a read): read the proxies once, when the client is made.
        # The CA bundle is VAULT_CACERT, never REQUESTS_CA_BUNDLE.
        session = requests.Session()
        session.trust_env = False
        session.verify = verify
        session.proxies = requests.utils.get_environ_proxies(settings.VAULT_ADDR)
        return hvac.Client(
            url=settings.VAULT_ADDR,
            namespace=settings.VAULT_NAMESPACE or None,
            verify=verify,
            timeout=settings.VAULT_TIMEOUT,
            session=session,
        )

    @sensitive_variables()  # the JWT, the login answer and hvac's frames (secret_id) below
    def _login(self) -> hvac.Client:
        client = self._new()
        method = self.auth_method
        try:
            if method == "token":
                client.token = settings.VAULT_TOKEN
                self._expires_at = None
                return client
            if method == "approle":
                result = client.auth.approle.login(
                    role_id=settings.VAULT_ROLE_ID,
                    secret_id=settings.VAULT_SECRET_ID or None,
                    mount_point=settings.VAULT_APPROLE_MOUNT,
                )
            else:
                jwt = Path(settings.VAULT_K8S_TOKEN_PATH).read_text().strip()
                result = client.auth.kubernetes.login(
                    role=settings.VAULT_K8S_ROLE, jwt=jwt, mount_point=settings.VAULT_K8S_MOUNT
                )
        except requests.RequestException:  # before OSError, which it subclasses
            raise _unreachable() from None
        except OSError as exc:
            raise VaultError(
                f"Cannot read the Kubernetes service-account token file: {exc.strerror}.",
                code="k8s_token_unreadable",
            ) from None
        except (hvac.exceptions.Forbidden, hvac.exceptions.InvalidRequest) as exc:
            raise VaultPermissionDenied(
                f"Vault refused the {method} login: check the role and its credentials.",
                code="login_denied",
            ) from exc
        except hvac.exceptions.VaultError as exc:
            raise _translate(exc) from None
        lease = result["auth"].get("lease_duration") or 0
        # Log in again a little before the token's TTL runs out.
        self._expires_at = time.monotonic() + lease * 0.9 if lease else None
        return client

    def get(self, *, fresh: bool = False) -> hvac.Client:
        with self._lock:
            expired = self._expires_at is not None and time.monotonic() >= self._expires_at
            if fresh or expired or self._client is None:
                self._client = self._login()
            return self._client

    def reset(self) -> None:
        with self._lock:
            self._client = None
            self._expires_at = None

    @sensitive_variables()  # every Vault call passes here: the token in the frames below
    def call(self, fn):
        """Run fn(client); on 403 with a login method, log in once more and retry."""
        try:
            return fn(self.get())
        except hvac.exceptions.Forbidden:
            if self.auth_method == "token":
                raise
            return fn(self.get(fresh=True))


_client = _Client()


def reset_client() -> None:
    """Forget the process's client and what it learnt of the mounts (settings changed, or tests)."""
    _client.reset()
    _mounts.clear()


def auth_method() -> str:
    return _client.auth_method


def _unreachable() -> VaultUnavailable:
    return VaultUnavailable(
        f"Vault at {settings.VAULT_ADDR} is unreachable or timed out; try again when it is back."
    )


def _translate(exc: hvac.exceptions.VaultError) -> VaultError:
    if isinstance(exc, hvac.exceptions.VaultDown):
        return VaultSealed("Vault is sealed; ask its operators to unseal it.")
    if isinstance(exc, hvac.exceptions.Forbidden):
        return VaultPermissionDenied(
            "Vault denied access: the app's token or policy does not allow reading this path."
        )
    if isinstance(exc, hvac.exceptions.InvalidPath):
        return SecretNotFound("No secret exists at that path.")
    return VaultError("Vault answered with an unexpected error; see its logs.")


def _get(path: str) -> tuple[int, dict]:
    """GET /v1/<path>; returns (status, json) without raising on 404."""
    return _request("GET", path)


def _request(
    method: str,
    path: str,
    body: dict | None = None,
    *,
    accept=(200, 204, 404),
    denied: str = "",
) -> tuple[int, dict]:
    """<method> /v1/<path>; returns (status, json) for the `accept`ed statuses. `denied` says
    what the policy refused, in the words of the operation, when Vault answers 403."""

    def do(client: hvac.Client):
        response = client.adapter.request(method, f"/v1/{path}", json=body, raise_exception=False)
        if isinstance(response, dict):
            return 200, response
        if response.status_code == 403:
            raise hvac.exceptions.Forbidden()
        if response.status_code == 503:
            raise hvac.exceptions.VaultDown()
        try:
            answer = response.json()
        except ValueError:
            answer = {}
        if response.status_code not in accept:
            raise hvac.exceptions.UnexpectedError()
        return response.status_code, answer or {}

    try:
        return _client.call(do)
    except hvac.exceptions.VaultError as exc:
        if denied and isinstance(exc, hvac.exceptions.Forbidden):
            raise VaultPermissionDenied(denied, code="policy_denies") from None
        raise _translate(exc) from None
    except requests.RequestException:
        raise _unreachable() from None


# Mounts seen recently: the mount table rarely changes, and each lookup is a round trip.
_MOUNT_TTL = 60.0
_mounts: dict[str, tuple[int, float]] = {}


def _mount_for(path: str) -> tuple[str, int]:
    """Find the mount holding `path` and its KV version, as the Vault CLI does."""
    now = time.monotonic()
    for mount, (version, seen) in sorted(_mounts.items(), key=lambda item: -len(item[0])):
        if path.startswith(f"{mount}/") and now - seen < _MOUNT_TTL:
            return mount, version
    mount, version = _lookup_mount(path)
    _mounts[mount] = (version, now)
    return mount, version


def _lookup_mount(path: str) -> tuple[str, int]:
    try:
        _, body = _get(f"sys/internal/ui/mounts/{path}")
    except VaultPermissionDenied as exc:
        if exc.code != VaultPermissionDenied.code:  # a failed login says so itself
            raise
        raise VaultPermissionDenied(
            f"No KV mount holds “{path}”, or the app's token may not use it.",
            code="mount_not_found",
        ) from None
    data = body.get("data") or {}
    if data.get("type") not in ("kv", "generic"):
        raise SecretNotFound(f"“{data.get('path', path)}” is not a KV secrets mount.")
    version = int((data.get("options") or {}).get("version") or 1)
    return data["path"].rstrip("/"), version


@dataclass(frozen=True)
class _Secret:
    """One version of one secret as read: every key's value, for one call only."""

    path: str
    mount: str
    kv_version: int
    data: dict | None
    metadata: dict

    def __repr__(self) -> str:  # keeps the values out of tracebacks and debug output
        return f"_Secret({self.path}, kv={self.kv_version})"


@sensitive_variables()  # the secret's values, and the token in the hvac frames below
def _fetch(path: str, version: int | None) -> _Secret:
    """GET one secret (KV v1 or v2); errors name the path, never a value."""
    mount, kv_version = _mount_for(path)
    relative = path[len(mount) :].lstrip("/")
    if not relative:
        raise InvalidReference("Name a secret inside the mount, not the mount itself.")
    if kv_version == 1:
        if version is not None:
            raise InvalidReference(
                f"“{mount}/” is a KV v1 mount, which keeps no versions: drop “@{version}”.",
                code="no_versions",
            )
        status, body = _get(f"{mount}/{relative}")
        secret = body.get("data") if status == 200 else None
        metadata: dict = {}
    else:
        query = f"?version={version}" if version else ""
        status, body = _get(f"{mount}/data/{relative}{query}")
        data = _mapping(body.get("data"), path)
        metadata = _mapping(data.get("metadata"), path)
        secret = data.get("data") if status == 200 else None
        # Only a version without data is gone: with delete_version_after configured, a live
        # version carries its future deletion_time too.
        if secret is None and metadata.get("destroyed"):
            raise SecretNotFound(
                f"Version {metadata.get('version')} of {path} has been destroyed.",
                code="version_destroyed",
            )
        if secret is None and metadata.get("deletion_time"):
            raise SecretNotFound(
                f"Version {metadata.get('version')} of {path} has been deleted.",
                code="version_deleted",
            )
    if secret is None:
        if version is not None:
            raise SecretNotFound(f"{path} has no version {version}.", code="version_not_found")
        raise SecretNotFound(f"No secret exists at {path}.")
    if not isinstance(secret, dict):
        raise _not_kv(path)
    return _Secret(path, mount, kv_version, secret, metadata)


def _mapping(value, path: str) -> dict:
    """A part of a KV answer that must be an object (absent: empty)."""
    if not value:
        return {}
    if not isinstance(value, dict):
        raise _not_kv(path)
    return value


def _not_kv(path: str) -> VaultError:
    # Something else answered (a proxy, another engine): a clear failure, not a crash.
    return VaultError(
        f"Vault's answer for {path} is not a KV secret; check the mount and anything in front "
        "of Vault.",
        code="unexpected_answer",
    )


@sensitive_variables()
def _pick(ref: Reference, secret: _Secret) -> Resolution:
    if ref.key not in secret.data:
        raise SecretNotFound(
            f"The secret at {ref.path} has no key “{ref.key}”.", code="key_missing"
        )
    value = secret.data[ref.key]
    if not isinstance(value, str):
        raise VaultError(f"The value of “{ref.key}” is not a string.", code="not_a_string")
    v2 = secret.kv_version == 2
    info = SecretInfo(
        reference=ref,
        mount=secret.mount,
        kv_version=secret.kv_version,
        version=secret.metadata.get("version") if v2 else None,
        updated=secret.metadata.get("created_time") if v2 else None,
    )
    return Resolution(info=info, value=value)


def read(ref: Reference) -> Resolution:
    """Read one referenced value (KV v1 or v2)."""
    return _pick(ref, _fetch(ref.path, ref.version))


_readers = ThreadPoolExecutor(max_workers=4, thread_name_prefix="vault-read")
# The requesters' Check button gets capacity of its own: a flood of checks must never slow an
# approval or an approver's page down.
_checkers = ThreadPoolExecutor(max_workers=2, thread_name_prefix="vault-check")


@sensitive_variables()
def read_all(refs: list[Reference]) -> dict[Reference, Resolution]:
    """Read many references at approval: each secret version once, one after the other in
    the approving request's own thread (no pool: an approval waits on nobody else's reads)."""
    return {
        ref: _pick(ref, secret)
        for group, secret in _each_secret(refs, _fetch, None)
        for ref in group
    }


@sensitive_variables()
def _each_secret(
    refs: list[Reference], fetch, pool: ThreadPoolExecutor | None
) -> list[tuple[list[Reference], object]]:
    """fetch(path, version) once for each secret version the references name (different ones
    in parallel on `pool`, if one is given), with the references that name it."""
    groups: dict[tuple[str, int | None], list[Reference]] = {}
    for ref in dict.fromkeys(refs):
        groups.setdefault((ref.path, ref.version), []).append(ref)
    if pool is not None and len(groups) > 1:
        results = list(pool.map(lambda key: fetch(*key), groups))
    else:
        results = [fetch(*key) for key in groups]
    return list(zip(groups.values(), results, strict=True))


@dataclass(frozen=True)
class SecretState:
    """What a sweep learns of one secret path without keeping a value: on KV v2 its metadata
    (current version; each version deleted or destroyed), on KV v1 (no versions) a keyed
    fingerprint of each key's current value."""

    kv_version: int
    current: int | None = None
    gone: frozenset[int] = frozenset()  # versions deleted or destroyed (KV v2)
    fingerprints: dict | None = None  # key -> fingerprint (KV v1)


@sensitive_variables()  # KV v1 values, while they are fingerprinted
def _state(path: str, digest) -> SecretState:
    mount, kv_version = _mount_for(path)
    relative = path[len(mount) :].lstrip("/")
    if kv_version == 1:
        secret = _fetch(path, None)
        return SecretState(1, fingerprints={k: digest(v) for k, v in secret.data.items()
                                            if isinstance(v, str)})  # fmt: skip
    # metadata/ only: a policy may grant it and not data/, and no value is read.
    status, body = _get(f"{mount}/metadata/{relative}")
    data = _mapping(body.get("data"), path)
    if status == 404 or not data:
        raise SecretNotFound(f"No secret exists at {path}.")
    versions = _mapping(data.get("versions"), path)
    gone = frozenset(
        int(n) for n, meta in versions.items() if isinstance(meta, dict) and _is_gone(meta)
    )
    return SecretState(2, current=int(data.get("current_version") or 0), gone=gone)


def _is_gone(meta: dict) -> bool:
    """Destroyed, or deleted: a deletion_time that has passed (with delete_version_after set,
    a live version carries a future one)."""
    when = meta.get("deletion_time") or ""
    if meta.get("destroyed"):
        return True
    try:
        return bool(when) and datetime.fromisoformat(when[:19] + "+00:00") <= datetime.now(UTC)
    except ValueError:
        return True


def secret_states(paths: list[str], *, digest) -> dict[str, SecretState | VaultError]:
    """_state() of many secret paths, each read once, different ones in parallel; for each
    path its state or the error it raised."""

    def one(path):
        try:
            return _state(path, digest)
        except VaultError as exc:
            return exc

    paths = list(dict.fromkeys(paths))
    return dict(zip(paths, _readers.map(one, paths), strict=True))


def check(ref: Reference) -> SecretInfo:
    """Confirm that a reference resolves with the app's token; the value is dropped at once."""
    answer = check_all([ref])[ref]
    if isinstance(answer, VaultError):
        raise answer
    return answer


@sensitive_variables()
def check_all(
    refs: list[Reference], *, digest=None, requester_check: bool = False
) -> dict[Reference, SecretInfo | VaultError]:
    """check() of many references: each secret version read once, different ones in parallel;
    for each reference its answer, or the error it raised. The values are dropped here; with
    `digest` (a keyed fingerprint function) each answer carries the value's digest."""

    def fetch(path, version):
        try:
            return _fetch(path, version)
        except VaultError as exc:
            return exc

    answers: dict[Reference, SecretInfo | VaultError] = {}
    pool = _checkers if requester_check else _readers
    for group, secret in _each_secret(refs, fetch, pool):
        for ref in group:
            if isinstance(secret, VaultError):
                answers[ref] = secret
                continue
            try:
                found = _pick(ref, secret)
            except VaultError as exc:
                answers[ref] = exc
                continue
            info = found.info
            if digest is not None:
                info = replace(info, fingerprint=digest(found.value))
            answers[ref] = info
    return answers


# ---------------------------------------------------------------------------
# Audit checkpoints: a Transit key signs them, a KV v2 path keeps them (connections_app.checkpoints)


def _first_error(body: dict) -> str:
    errors = body.get("errors") or []
    return str(errors[0]).strip() if errors else ""


def transit_sign(mount: str, key: str, message: bytes) -> str:
    """Sign `message` with a Transit key; returns Vault's "vault:v<version>:<base64>"."""
    status, body = _request(
        "POST",
        f"{mount}/sign/{key}",
        {"input": base64.b64encode(message).decode()},
        accept=(200, 400, 404),
        denied=f"Vault's policy does not let the app sign with Transit key {mount}/keys/{key} "
        f"(it needs update on {mount}/sign/{key}).",
    )
    if status == 404:
        raise _transit_missing(mount)
    if status == 400:
        error = _first_error(body)
        if "not found" in error:
            raise _key_missing(mount, key)
        raise VaultError(
            f"Transit key {mount}/keys/{key} cannot sign: {error or 'Vault refused'}.",
            code="signing_key_unusable",
        )
    signature = (body.get("data") or {}).get("signature")
    if not isinstance(signature, str):
        raise VaultError("Vault's answer to a Transit sign has no signature.", code="unexpected")
    return signature


def transit_public_keys(mount: str, key: str) -> tuple[str, dict[int, bytes]]:
    """A Transit key's type and its public keys by version (the private key never leaves)."""
    status, body = _request(
        "GET",
        f"{mount}/keys/{key}",
        denied=f"Vault's policy does not let the app read Transit key {mount}/keys/{key} "
        "(it needs read on that path to check signatures).",
    )
    if status == 404:
        if "no handler for route" in _first_error(body):
            raise _transit_missing(mount)
        raise _key_missing(mount, key)
    data = body.get("data") or {}
    keys = {}
    try:
        for version, entry in (data.get("keys") or {}).items():
            if isinstance(entry, dict) and entry.get("public_key"):
                keys[int(version)] = base64.b64decode(entry["public_key"])
    except (ValueError, TypeError):
        raise VaultError(
            f"Vault's answer for Transit key {mount}/keys/{key} has malformed public keys.",
            code="unexpected",
        ) from None
    return str(data.get("type") or ""), keys


def _transit_missing(mount: str) -> VaultError:
    return VaultError(
        f"No Transit secrets engine is mounted at {mount}/ (bao secrets enable -path={mount} "
        "transit).",
        code="transit_not_mounted",
    )


def _key_missing(mount: str, key: str) -> VaultError:
    return VaultError(
        f"Transit key {mount}/keys/{key} does not exist (bao write -f {mount}/keys/{key} "
        "type=ed25519).",
        code="signing_key_missing",
    )


def _kv2_mount(mount: str, path: str) -> None:
    """The store must be on a KV v2 mount: versions tell a first write from an overwrite."""
    try:
        found, version = _mount_for(f"{mount}/{path}")
    except VaultPermissionDenied as exc:
        if exc.code != "mount_not_found":  # a failed login says so itself
            raise
        raise VaultPermissionDenied(
            f"The app's token may not use the checkpoint store {mount}/{path}: the token is "
            f"invalid, or its policy grants nothing there (it needs create and read on "
            f"{mount}/data/{path}/*, list on {mount}/metadata/{path}/*).",
            code="policy_denies",
        ) from None
    if version != 2:
        raise VaultError(
            f"The audit checkpoint store {found}/ is a KV v{version} mount; it needs KV v2.",
            code="store_not_kv2",
        )


def store_list(mount: str, path: str) -> list[str]:
    """The entries under a KV v2 path (none when it does not exist yet)."""
    _kv2_mount(mount, path)
    # GET ?list=true rather than the LIST verb, which proxies in front of Vault may refuse.
    status, body = _request(
        "GET",
        f"{mount}/metadata/{path}?list=true",
        denied=f"Vault's policy does not let the app list the checkpoint store {mount}/{path} "
        f"(it needs list on {mount}/metadata/{path}/*).",
    )
    if status == 404:
        return []
    return [str(name) for name in (body.get("data") or {}).get("keys") or []]


def store_read(mount: str, path: str) -> tuple[dict, int] | None:
    """An entry's data and version number, or None when it has none (absent or deleted)."""
    status, body = _request(
        "GET",
        f"{mount}/data/{path}",
        denied=f"Vault's policy does not let the app read {mount}/{path} (it needs read on "
        f"{mount}/data/...).",
    )
    data = body.get("data") or {}
    if status != 200 or not isinstance(data.get("data"), dict):
        return None
    return data["data"], int((data.get("metadata") or {}).get("version") or 0)


def store_read_many(mount: str, paths: list[str]) -> list[tuple[dict, int] | None]:
    """store_read of many entries, a few at a time."""
    return list(_readers.map(lambda path: store_read(mount, path), paths))


def store_create(mount: str, path: str, data: dict[str, str]) -> bool:
    """Write a new entry (check-and-set 0: only if it does not exist yet). False when it already
    exists: the app's policy lets it create entries, never update them."""
    try:
        status, body = _request(
            "POST",
            f"{mount}/data/{path}",
            {"options": {"cas": 0}, "data": data},
            accept=(200, 204, 400),
        )
    except VaultPermissionDenied as exc:
        if exc.code != VaultPermissionDenied.code:  # a failed login says so itself
            raise
        # A create-only policy refuses a write to an existing entry as an update.
        if store_read(mount, path) is not None:
            return False
        raise VaultPermissionDenied(
            f"Vault's policy does not let the app create entries in the checkpoint store "
            f"{mount}/{path.rsplit('/', 1)[0]} (it needs create on {mount}/data/...).",
            code="policy_denies",
        ) from None
    if status == 400:
        if "check-and-set" in _first_error(body):
            return False
        raise VaultError(
            f"Vault refused the checkpoint {mount}/{path}: {_first_error(body) or 'bad request'}.",
            code="store_refused",
        )
    return True


@sensitive_variables()
def health() -> dict:
    """Reachable, sealed, authenticated: no token or secret in the answer. Never raises: an
    anonymous probe must not be able to turn a misconfiguration into an error report."""
    status = {"reachable": False, "sealed": None, "authenticated": False}
    try:
        raw = _client._new().sys.read_health_status(method="GET")
    except Exception as exc:  # noqa: BLE001
        log.warning("Vault health check failed: %s", type(exc).__name__)
        return status
    body = raw if isinstance(raw, dict) else _json_or_empty(raw)
    status["reachable"] = True
    status["sealed"] = bool(body.get("sealed", True))
    if status["sealed"]:
        return status
    try:
        _client.call(lambda c: c.auth.token.lookup_self())
        status["authenticated"] = True
    except (hvac.exceptions.VaultError, VaultError, requests.RequestException):
        status["authenticated"] = False
    except Exception as exc:  # noqa: BLE001 - a token no HTTP header can carry, say
        log.warning("Vault token lookup failed: %s", type(exc).__name__)
    return status


def _json_or_empty(response) -> dict:
    try:
        return response.json()
    except ValueError:
        return {}
