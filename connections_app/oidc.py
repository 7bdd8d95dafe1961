"""Single sign-on with the company's identity provider: OpenID Connect through
mozilla-django-oidc, the only module that imports it.

People are found by the provider's subject (`sub`), never by email. The provider's groups claim
gives the app's groups through OIDC_GROUP_MAP at every sign-in (and at every re-check of a
session, OIDC_RENEW_ID_TOKEN_EXPIRY_SECONDS): only the groups the map names are added or taken
away; a person whose groups give no role is refused, with no session. Each sign-in, refusal and
role change is an audit event. No token, code or client secret reaches a log line, a page, a row
or the audit log: they live only in the frames of one callback (hidden from error reports).
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass, field

import jwt
import requests
from django.conf import settings
from django.contrib import auth, messages
from django.contrib.auth.models import Group
from django.core.exceptions import SuspiciousOperation
from django.db import IntegrityError, transaction
from django.http import Http404
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.deprecation import MiddlewareMixin
from django.views.decorators.debug import sensitive_variables
from mozilla_django_oidc import auth as oidc_auth
from mozilla_django_oidc import middleware as oidc_middleware
from mozilla_django_oidc import views as oidc_views

from . import audit
from .oidc_identity import OidcIdentity

log = logging.getLogger(__name__)

SIGN_IN = "auth.oidc.sign_in"
REFUSED = "auth.oidc.refused"
ROLES_CHANGED = "auth.oidc.roles_changed"

CLOCK_SKEW_SECONDS = 30  # between the provider's clock and ours, for exp / iat / nbf
# What a provider answers to a silent re-check (prompt=none) when its own session has ended:
# the person is sent to sign in again rather than shown a refusal.
SIGN_IN_AGAIN = {"login_required", "interaction_required", "consent_required",
                 "account_selection_required"}  # fmt: skip


def enabled() -> bool:
    """Single sign-on is on when a client id is configured."""
    return bool(settings.OIDC_RP_CLIENT_ID)


def is_callback(request) -> bool:
    return request is not None and request.path == reverse("oidc_authentication_callback")


# ---------------------------------------------------------------------------
# Roles from the groups claim


def managed_groups() -> set[str]:
    """The app groups OIDC_GROUP_MAP gives: the only ones a sign-in adds or takes away."""
    return {target for targets in settings.OIDC_GROUP_MAP.values() for target in targets}


def roles_for(claims: dict) -> set[str]:
    """The app groups the provider's groups claim maps to (a single group may come as a string)."""
    value = claims.get(settings.OIDC_GROUPS_CLAIM)
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list | tuple):
        return set()
    group_map = settings.OIDC_GROUP_MAP
    return {t for name in value if isinstance(name, str) for t in group_map.get(name, ())}


def apply_roles(user, wanted: set[str]) -> tuple[list[str], list[str]]:
    """Make the user's managed groups exactly `wanted` (those of them that exist); groups
    outside the map, given by hand, stay. Returns the names added and removed."""
    managed = managed_groups()
    existing = {group.name: group for group in Group.objects.filter(name__in=managed)}
    missing = sorted((wanted & managed) - existing.keys())
    if missing:
        log.warning("OIDC_GROUP_MAP names groups that do not exist: %s", ", ".join(missing))
    wanted = wanted & existing.keys()
    held = set(user.groups.filter(name__in=managed).values_list("name", flat=True))
    added, removed = sorted(wanted - held), sorted(held - wanted)
    if added:
        user.groups.add(*(existing[name] for name in added))
    if removed:
        user.groups.remove(*(existing[name] for name in removed))
    return added, removed


def _roles_held(user) -> list[str]:
    return sorted(user.groups.filter(name__in=managed_groups()).values_list("name", flat=True))


# ---------------------------------------------------------------------------
# Refusals


@dataclass(eq=False)
class Refused(Exception):  # noqa: N818 (a refusal, not an error of the app)
    """A sign-in that ends with no session; `data` goes to the audit event (never a token)."""

    reason: str
    data: dict = field(default_factory=dict)
    user: object = None
    recorded: bool = False  # already written to the audit log, in the transaction it explains

    def record(self) -> None:
        """Write the refusal's audit event (inside the caller's transaction)."""
        audit.record(
            action=REFUSED,
            actor=self.user,
            outcome="failure",
            data={"reason": self.reason, **self.data},
        )
        self.recorded = True


def refuse(request, refusal: Refused) -> None:
    """Record a refusal (unless the transaction that caused it did) for the callback to show."""
    if not refusal.recorded:
        with transaction.atomic():
            refusal.record()
    log.warning("Single sign-on refused: %s %s", refusal.reason, refusal.data.get("detail", ""))
    request.oidc_refusal = refusal


# ---------------------------------------------------------------------------
# The authentication backend


def _digest(sub: str) -> str:
    return hashlib.sha256(sub.encode()).hexdigest()


def _text(claims: dict, name: str, limit: int) -> str:
    value = claims.get(name)
    return value.strip()[:limit] if isinstance(value, str) else ""


class Backend(oidc_auth.OIDCAuthenticationBackend):
    """mozilla-django-oidc's backend: users found by `sub`, roles from the groups claim, and an
    ID token accepted only when signed by the provider's key, for this client, by this issuer
    (when OIDC_OP_ISSUER is set), with this sign-in's nonce, and not expired."""

    @sensitive_variables()  # the client secret, the code and the tokens in the frames below
    def authenticate(self, request, **kwargs):
        # Only the callback passes a nonce; a password form's request never reaches the provider.
        if "nonce" not in kwargs or not enabled() or not is_callback(request):
            return None
        try:
            return super().authenticate(request, **kwargs)
        except Refused as refused:
            refusal = refused
        except requests.RequestException as exc:
            status = getattr(getattr(exc, "response", None), "status_code", None)
            refusal = Refused("provider_error", {"detail": f"{type(exc).__name__} {status or ''}"})
        except (SuspiciousOperation, jwt.PyJWTError, KeyError, ValueError, TypeError) as exc:
            # mozilla-django-oidc's own checks (nonce, key id, algorithm) and malformed answers.
            refusal = Refused("invalid_token", {"detail": type(exc).__name__})
        refuse(request, refusal)
        return None

    def get_user(self, user_id):
        # mozilla-django-oidc's would keep a deactivated user's session alive.
        user = super().get_user(user_id)
        return user if user is not None and self.user_can_authenticate(user) else None

    # --- the ID token

    def retrieve_matching_jwk(self, token):
        """The provider's key for this token: the one its key id names, or, for a token that
        names none, the provider's only signing key of the token's kind (mozilla-django-oidc
        would fail on a token without a key id)."""
        header = jwt.get_unverified_header(token)
        if "kid" in header:
            return super().retrieve_matching_jwk(token)
        response = requests.get(
            self.OIDC_OP_JWKS_ENDPOINT,
            verify=self.get_settings("OIDC_VERIFY_SSL", True),
            timeout=self.get_settings("OIDC_TIMEOUT", None),
            proxies=self.get_settings("OIDC_PROXY", None),
        )
        response.raise_for_status()
        alg = str(header.get("alg", ""))
        kty = {"RS": "RSA", "PS": "RSA", "ES": "EC"}.get(alg[:2])
        keys = [
            key
            for key in response.json()["keys"]
            if key.get("kty") == kty
            and key.get("use", "sig") == "sig"
            and key.get("alg", alg) == alg
        ]
        if len(keys) != 1:
            raise SuspiciousOperation("The token names no key, and the provider has not one.")
        return jwt.PyJWK(keys[0])

    def get_payload_data(self, token, key):
        """The token's claims, once signature, algorithm, audience, issuer and times hold
        (mozilla-django-oidc checks neither audience nor issuer, and lets an expired token's
        error escape as a server error)."""
        try:
            payload = jwt.decode(
                token,
                key,
                algorithms=[self.OIDC_RP_SIGN_ALGO],
                audience=self.OIDC_RP_CLIENT_ID,
                issuer=settings.OIDC_OP_ISSUER or None,
                leeway=CLOCK_SKEW_SECONDS,
                options={"require": ["iss", "sub", "aud"]},
            )
        except jwt.PyJWTError as exc:
            raise Refused("invalid_token", {"detail": type(exc).__name__}) from None
        audiences = payload["aud"] if isinstance(payload["aud"], list) else [payload["aud"]]
        if len(audiences) > 1 and payload.get("azp") != self.OIDC_RP_CLIENT_ID:
            raise Refused("invalid_token", {"detail": "azp"})
        return payload

    def verify_token(self, token, **kwargs):
        payload = super().verify_token(token, **kwargs)  # nonce checked there
        if "nonce" in kwargs and not ("exp" in payload and "iat" in payload):
            raise Refused("invalid_token", {"detail": "exp or iat missing"})
        return payload

    def get_userinfo(self, access_token, id_token, payload):
        """The ID token's claims, updated with the userinfo endpoint's about the same subject."""
        info = super().get_userinfo(access_token, id_token, payload)
        if not isinstance(info, dict) or info.get("sub") != payload.get("sub"):
            raise Refused("invalid_token", {"detail": "userinfo is about another subject"})
        return {**payload, **info}

    def verify_claims(self, claims):
        sub = claims.get("sub")
        return isinstance(sub, str) and 0 < len(sub) <= 255

    # --- the user

    def filter_users_by_claims(self, claims):
        return self.UserModel.objects.filter(oidc_identity__sub=claims["sub"])

    def create_user(self, claims):
        user = self.UserModel.objects.create_user(self._new_username(claims))  # no password
        OidcIdentity.objects.create(user=user, sub=claims["sub"], issuer=_text(claims, "iss", 500))
        return self.update_user(user, claims)

    def update_user(self, user, claims):
        """Name and address follow the provider; the username, once given, stays (the audit
        log names people by it)."""
        fields = {
            "email": _text(claims, "email", 254),
            "first_name": _text(claims, "given_name", 150),
            "last_name": _text(claims, "family_name", 150),
        }
        changed = [name for name, value in fields.items() if getattr(user, name) != value]
        if changed:
            for name in changed:
                setattr(user, name, fields[name])
            user.save(update_fields=changed)
        return user

    def _new_username(self, claims) -> str:
        """preferred_username or email; with a suffix from the subject when a user (a local
        one, say) already has it, in any case."""
        digest = _digest(claims["sub"])
        base = _text(claims, "preferred_username", 150) or _text(claims, "email", 150)
        candidates = [base, f"{base[:140]}-{digest[:8]}"] if base else []
        for candidate in [*candidates, f"sso-{digest[:20]}"]:
            if not self.UserModel.objects.filter(username__iexact=candidate).exists():
                return candidate
        return f"sso-{digest[:40]}"

    def get_or_create_user(self, access_token, id_token, payload):
        claims = self.get_userinfo(access_token, id_token, payload)
        if not self.verify_claims(claims):
            raise Refused("invalid_token", {"detail": "sub"})
        for attempt in (1, 2):
            try:
                return self._sign_in(claims)
            except IntegrityError:  # the same person's first sign-in in two tabs at once
                if attempt == 2:
                    raise
        return None  # not reached

    def _sign_in(self, claims):
        """Find or create the user, apply the roles and record it all, in one transaction;
        a refusal is raised only after that transaction has committed (so roles the provider
        took away stay taken away)."""
        sub = claims["sub"]
        who = {"sub": sub, "issuer": _text(claims, "iss", 500)}
        wanted = roles_for(claims)
        current = getattr(self.request, "user", None)
        refusal = None
        with transaction.atomic():
            user = self.filter_users_by_claims(claims).select_for_update(of=("self",)).first()
            existing = set(Group.objects.filter(name__in=wanted).values_list("name", flat=True))
            if user is not None and not user.is_active:
                refusal = Refused("inactive", who, user=user)
            elif user is None and not existing:
                # Nobody is created for a person who may not come in.
                name = _text(claims, "preferred_username", 150) or _text(claims, "email", 150)
                refusal = Refused("no_role", {**who, "name": name})
            else:
                new_user = user is None
                user = self.create_user(claims) if new_user else self.update_user(user, claims)
                added, removed = apply_roles(user, wanted)
                if added or removed:
                    audit.record(
                        action=ROLES_CHANGED,
                        actor=user,
                        data={**who, "added": added, "removed": removed},
                    )
                roles = _roles_held(user)
                if not roles:
                    refusal = Refused("no_role", who, user=user)
                elif not (current is not None and current.is_authenticated and current == user):
                    # A re-check of this user's own session is not a new sign-in.
                    audit.record(
                        action=SIGN_IN,
                        actor=user,
                        data={**who, "roles": roles, "new_user": new_user},
                    )
            if refusal is not None:
                refusal.record()
        if refusal is not None:
            raise refusal
        return user


# ---------------------------------------------------------------------------
# Views


class AuthenticateView(oidc_views.OIDCAuthenticationRequestView):
    """Sends the browser to the provider (with state, nonce and PKCE kept in the session)."""

    def get(self, request):
        if not enabled():
            raise Http404("Single sign-on is off.")
        return super().get(request)


class CallbackView(oidc_views.OIDCAuthenticationCallbackView):
    """Where the provider sends the browser back; a refusal is a plain page and no session."""

    @sensitive_variables()  # the nonce and PKCE verifier in mozilla-django-oidc's frame below
    def get(self, request):
        if not enabled():
            raise Http404("Single sign-on is off.")
        try:
            return super().get(request)
        except SuspiciousOperation:
            # mozilla-django-oidc: a state this browser's session did not start (or used already).
            refuse(request, Refused("state"))
            return self.login_failure()

    def login_failure(self):
        request = self.request
        refusal = getattr(request, "oidc_refusal", None)
        if refusal is None:
            # An OAuth error code ([a-z_]); anyone can put anything there, so only that is kept.
            error = re.sub(r"[^a-z_]", "", request.GET.get("error", "").lower())[:64]
            if "error" in request.GET:
                refusal = Refused("provider_error", {"error": error})
            else:  # no code, or no sign-in started in this session
                refusal = Refused("state")
            refuse(request, refusal)
        auth.logout(request)  # whatever session there was (one being re-checked, say) ends
        if refusal.data.get("error") in SIGN_IN_AGAIN:
            messages.info(request, f"Please sign in again with {settings.OIDC_PROVIDER_NAME}.")
            return redirect(settings.LOGIN_URL)
        return render(
            request,
            "registration/oidc_refused.html",
            {
                "reason": refusal.reason,
                "provider": settings.OIDC_PROVIDER_NAME,
                "name": refusal.data.get("name") or getattr(refusal.user, "username", ""),
                "had_account": refusal.user is not None,
                "provider_groups": sorted(settings.OIDC_GROUP_MAP),
                "error": refusal.data.get("error", ""),
            },
            status=403,
        )


# ---------------------------------------------------------------------------
# Re-checking sessions


def _setting(name: str, default=None):
    return property(lambda self: getattr(settings, name, default))


class SessionRefresh(oidc_middleware.SessionRefresh):
    """mozilla-django-oidc's SessionRefresh: a single sign-on session whose last check is older
    than OIDC_RENEW_ID_TOKEN_EXPIRY_SECONDS is sent to the provider again (prompt=none), and
    the sign-in that comes back re-applies the groups (or refuses, ending the session).
    Sessions signed in with a password are left alone. Settings are read at each request."""

    OIDC_EXEMPT_URLS = _setting("OIDC_EXEMPT_URLS", [])
    OIDC_OP_AUTHORIZATION_ENDPOINT = _setting("OIDC_OP_AUTHORIZATION_ENDPOINT")
    OIDC_RP_CLIENT_ID = _setting("OIDC_RP_CLIENT_ID")
    OIDC_STATE_SIZE = _setting("OIDC_STATE_SIZE", 32)
    OIDC_AUTHENTICATION_CALLBACK_URL = _setting(
        "OIDC_AUTHENTICATION_CALLBACK_URL", "oidc_authentication_callback"
    )
    OIDC_RP_SCOPES = _setting("OIDC_RP_SCOPES", "openid email")
    OIDC_USE_NONCE = _setting("OIDC_USE_NONCE", True)
    OIDC_NONCE_SIZE = _setting("OIDC_NONCE_SIZE", 32)

    def __init__(self, get_response):
        MiddlewareMixin.__init__(self, get_response)  # the properties above, not copies

    def process_request(self, request):
        if not enabled():
            return None
        return super().process_request(request)
