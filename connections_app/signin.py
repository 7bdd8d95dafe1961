"""Failed sign-ins: django-axes counts them per (username, client address) and locks that pair
for a while; each username's recent failures from anywhere only slow its sign-ins down.

So a guesser can lock out no one but themselves: the account's owner, signing in from another
address, waits a few seconds at most. Usernames reach axes' tables only as keyed digests
(people type passwords into the username field).
"""

from __future__ import annotations

import functools
import ipaddress
import math
import time

from axes.handlers.proxy import AxesProxyHandler
from axes.models import AccessAttempt
from django.conf import settings
from django.contrib import admin
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth import forms as auth_forms
from django.contrib.auth import views as auth_views
from django.contrib.auth.backends import ModelBackend
from django.contrib.auth.forms import AuthenticationForm
from django.contrib.auth.signals import user_login_failed
from django.core.exceptions import ValidationError
from django.db.models import Sum
from django.http import HttpResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.crypto import salted_hmac
from django.utils.translation import ngettext

from . import oidc

# ---------------------------------------------------------------------------
# Who is signing in: the axes callables (AXES_CLIENT_IP_CALLABLE, AXES_USERNAME_CALLABLE)


@functools.lru_cache(maxsize=8)
def _networks(proxies: tuple[str, ...]) -> tuple:
    return tuple(ipaddress.ip_network(proxy.strip(), strict=False) for proxy in proxies)


def _parse(text: str):
    try:
        address = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    return getattr(address, "ipv4_mapped", None) or address


def _trusted(address) -> bool:
    return any(address in network for network in _networks(tuple(settings.TRUSTED_PROXIES)))


def client_address(request) -> str | None:
    """REMOTE_ADDR; when that is a trusted proxy (TRUSTED_PROXIES), the right-most
    X-Forwarded-For entry that is not itself one. None when no address is known."""
    client = _parse(request.META.get("REMOTE_ADDR", ""))
    if client is None or not _trusted(client):
        return str(client) if client else None
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "").split(",")
    for hop in reversed([hop for hop in forwarded if hop.strip()]):
        client = _parse(hop)
        if client is None:
            return None  # a trusted proxy wrote no address: nothing further left is known
        if not _trusted(client):
            break
    return str(client)


def username_digest(username: str) -> str:
    # Case-folded: "Alice" and "alice" share one count, so case games buy no extra guesses.
    return salted_hmac(
        "connections_app.throttle", username.casefold(), algorithm="sha256"
    ).hexdigest()


def username_key(request, credentials: dict | None) -> str | None:
    """What axes stores and counts as the username: its keyed digest, never the text typed."""
    username = (credentials or {}).get("username")
    if username is None and request is not None:
        username = getattr(request, "POST", {}).get("username")
    return username_digest(username) if username else None


def not_a_password_attempt(request, credentials) -> bool:
    """AXES_WHITELIST_CALLABLE: the single sign-on callback checks no password, so axes neither
    counts its refusals nor stores its query (which holds the authorization code)."""
    return request is not None and request.path == reverse("oidc_authentication_callback")


# ---------------------------------------------------------------------------
# Locked pairs and slowed usernames


def _recent(**filters):
    since = timezone.now() - settings.AXES_COOLOFF_TIME
    return AccessAttempt.objects.filter(attempt_time__gte=since, **filters)


def lock_minutes(request, username: str) -> int | None:
    """Minutes until this (username, address) pair may try again; None when not locked."""
    credentials = {"username": username}
    if not AxesProxyHandler.is_locked(request, credentials):
        return None
    rows = _recent(username=username_digest(username), ip_address=request.axes_ip_address)
    # Locked while the newest failures still add up to the limit: until the oldest of them
    # leaves the window.
    counted = 0
    until = timezone.now()
    for failures, last in rows.order_by("-attempt_time").values_list(
        "failures_since_start", "attempt_time"
    ):
        counted += failures
        until = last + settings.AXES_COOLOFF_TIME
        if counted >= settings.AXES_FAILURE_LIMIT:
            break
    return max(1, math.ceil((until - timezone.now()).total_seconds() / 60))


def slowdown_seconds(username: str) -> float:
    """The pause before this username's password is checked: it grows with its failures within
    the window from every address, up to LOGIN_SLOWDOWN_MAX_SECONDS."""
    failures = _recent(username=username_digest(username)).aggregate(
        total=Sum("failures_since_start")
    )["total"]
    return min(settings.LOGIN_SLOWDOWN_MAX_SECONDS, (failures or 0) * settings.LOGIN_SLOWDOWN_STEP)


def _pause(seconds: float) -> None:
    time.sleep(seconds)


def locked_message(minutes: int) -> str:
    return ngettext(
        "Too many failed sign-ins from this address for this account. "
        "Try again in %(minutes)d minute.",
        "Too many failed sign-ins from this address for this account. "
        "Try again in %(minutes)d minutes.",
        minutes,
    ) % {"minutes": minutes}


def before_password_check(request, username: str) -> None:
    """Refuse a locked pair (ValidationError, code "throttled"); otherwise slow down."""
    minutes = lock_minutes(request, username)
    if minutes is not None:
        raise ValidationError(locked_message(minutes), code="throttled")
    delay = slowdown_seconds(username)
    if delay > 0:
        _pause(delay)


def lockout_response(request, original_response=None, credentials=None):
    """AXES_LOCKOUT_CALLABLE: the form has already said what happened (the lock itself is
    refused by before_password_check on the next attempt), so its page stays as it is."""
    if isinstance(original_response, HttpResponse):
        return original_response
    minutes = max(1, math.ceil(settings.AXES_COOLOFF_TIME.total_seconds() / 60))
    return HttpResponse(locked_message(minutes), status=429, content_type="text/plain")


# ---------------------------------------------------------------------------
# Who may use a password


class LocalPasswordBackend(ModelBackend):
    """Django's ModelBackend; with LOCAL_LOGIN off, only superusers' passwords count (the
    break-glass accounts), and other users' password sessions end.

    Anyone else's right password is refused exactly like a wrong one (and counted by axes), so
    the form tells no one whether a password was right."""

    def user_can_authenticate(self, user):
        allowed = settings.LOCAL_LOGIN or getattr(user, "is_superuser", False)
        return allowed and super().user_can_authenticate(user)


# ---------------------------------------------------------------------------
# The forms: both sign-in pages and both password change pages


class SignInMixin:
    """For AuthenticationForm and its subclasses: a locked pair is refused and a guessed-at
    username slowed before the password is checked (axes counts the failure after it)."""

    def clean(self):
        username = self.cleaned_data.get("username")
        if username and self.cleaned_data.get("password") and self.request is not None:
            before_password_check(self.request, username)
        return super().clean()


class LoginForm(SignInMixin, AuthenticationForm):
    pass


class LoginView(auth_views.LoginView):
    """Django's sign-in page, offering single sign-on above the password form when it is on."""

    authentication_form = LoginForm

    def get_context_data(self, **kwargs):
        return {
            **super().get_context_data(**kwargs),
            "sso_provider": settings.OIDC_PROVIDER_NAME if oidc.enabled() else "",
            "local_login": settings.LOCAL_LOGIN,
        }


class AdminLoginForm(SignInMixin, AdminAuthenticationForm):
    pass


class PasswordChangeForm(auth_forms.PasswordChangeForm):
    """Each old password tried counts as a sign-in: a stolen session must not let anyone
    guess the account's password without limit."""

    def __init__(self, user, *args, request=None, **kwargs):
        self.request = request
        super().__init__(user, *args, **kwargs)

    def clean_old_password(self):
        username = self.user.get_username()
        before_password_check(self.request, username)
        try:
            return super().clean_old_password()
        except ValidationError:
            # What authenticate() sends for a wrong password: axes counts it.
            user_login_failed.send(
                sender=__name__, credentials={"username": username}, request=self.request
            )
            raise


class AdminPasswordChangeForm(PasswordChangeForm):
    required_css_class = "required"  # as the admin's own


class PasswordChangeView(auth_views.PasswordChangeView):
    form_class = PasswordChangeForm
    template_name = "registration/password_change.html"  # the app's page, not the admin's

    def get_form_kwargs(self):
        return {**super().get_form_kwargs(), "request": self.request}


def admin_password_change(request):
    """The admin's password change page as AdminSite.password_change makes it, with the
    counted form (Django's admin takes no other form there)."""
    request.current_app = admin.site.name
    return PasswordChangeView.as_view(
        form_class=AdminPasswordChangeForm,
        template_name="registration/password_change_form.html",  # Django admin's own
        success_url=reverse("admin:password_change_done"),
        extra_context=admin.site.each_context(request),
    )(request)
