"""Scopes: the Vault paths a requester's groups may reference, and the hosts that may receive
their secrets. Checked when a request is saved, on Check, and again at approval (an
administrator may have narrowed them since)."""

from __future__ import annotations

from urllib.parse import urlsplit

from .. import document as doc
from .. import vault
from ..models import Scope, SecretHost

ENDPOINT = ("AuthParameters", "OAuthParameters", "AuthorizationEndpoint")


def scopes_of(user) -> list[Scope]:
    """The scopes of the user's groups (cached on the user object for the request)."""
    if not hasattr(user, "_scopes"):
        user._scopes = list(Scope.objects.filter(group__user=user).select_related("group"))
    return user._scopes


def scope_for(ref: vault.Reference, scopes: list[Scope]) -> Scope | None:
    """The first scope whose path prefixes hold the reference's path."""
    for scope in scopes:
        for prefix in scope.prefixes:
            base = prefix.rstrip("/")
            if ref.path == base or ref.path.startswith(f"{base}/"):
                return scope
    return None


def out_of_scope(ref: vault.Reference) -> vault.VaultError:
    return vault.VaultError(
        f"{ref.secret} is outside the Vault paths your groups may reference; ask an "
        "administrator to add its prefix to your group's scope.",
        code="out_of_scope",
    )


def endpoint_host(document: dict) -> str:
    """The host that receives the client secret (an OAuth authorization endpoint), or ""."""
    node = document
    for part in ENDPOINT:
        node = node.get(part) if isinstance(node, dict) else None
    try:
        return (urlsplit(node).hostname or "").lower() if isinstance(node, str) else ""
    except ValueError:
        return ""


CLIENT_SECRET = ("AuthParameters", "OAuthParameters", "ClientParameters", "ClientSecret")


def within_scopes(document: dict, user) -> bool:
    """Is every secret of a (pushed or request) document inside the user's scopes?"""
    scopes = scopes_of(user)
    return all(scope_for(ref, scopes) for _, ref in doc.references(document))


def scope_problems(document: dict, user) -> list[doc.Issue]:
    """Each reference outside the user's scopes, and an endpoint host no scope allows, by
    field (the form puts each message beside its field)."""
    scopes = scopes_of(user)
    issues = [
        doc.Issue(doc.path_text(path), "out_of_scope", out_of_scope(ref).message)
        for path, ref in doc.references(document)
        if scope_for(ref, scopes) is None
    ]
    host = endpoint_host(document)
    owner = _client_secret_scope(document, scopes)
    if host and (owner is None or host not in owner.hosts):
        issues.append(
            doc.Issue(
                ".".join(ENDPOINT),
                "host_not_allowed",
                f"{host} is not among the hosts the client secret's scope allows to receive "
                "secrets; ask an administrator to add it.",
            )
        )
    return issues


def _client_secret_scope(document: dict, scopes: list[Scope]) -> Scope | None:
    """The scope of the secret the endpoint receives (the OAuth client secret)."""
    try:
        refs = dict(doc.references(document))
    except vault.InvalidReference:
        return None
    ref = refs.get(CLIENT_SECRET)
    return scope_for(ref, scopes) if ref is not None else None


def host_allowed(document: dict, user) -> bool:
    host = endpoint_host(document)
    owner = _client_secret_scope(document, scopes_of(user))
    return bool(host) and owner is not None and host in owner.hosts


def host_is_new(host: str) -> bool:
    return bool(host) and not SecretHost.objects.filter(host=host).exists()


def host_received(document: dict, request_id: int) -> None:
    """Remember that a secret went to the document's endpoint host (inside the transaction
    that records the change)."""
    host = endpoint_host(document)
    if host:
        SecretHost.objects.get_or_create(host=host, defaults={"first_request": request_id})
