"""Failed sign-ins throttled per username and per client address, in the database.

The database, not process memory, so every gunicorn worker sees the same counts. Each attempt
is written before its password is checked, so attempts still in flight count too: sending many
at once does not get more than the limit to the password check.
"""

from __future__ import annotations

import math
from datetime import timedelta

from django.conf import settings
from django.contrib import admin
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth import forms as auth_forms
from django.contrib.auth import views as auth_views
from django.contrib.auth.forms import AuthenticationForm
from django.core.exceptions import ValidationError
from django.urls import reverse
from django.utils import timezone
from django.utils.crypto import salted_hmac
from django.utils.translation import ngettext

from .models import LoginFailure


class Throttled(Exception):
    """Over a limit: no password check until `retry_after` has passed."""

    def __init__(self, retry_after: timedelta):
        super().__init__(retry_after)
        self.retry_after = retry_after


def client_address(request) -> str:
    """REMOTE_ADDR, or the address the outermost trusted proxy saw (TRUSTED_PROXY_COUNT)."""
    hops = settings.TRUSTED_PROXY_COUNT
    forwarded = [part.strip() for part in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",")]
    forwarded = [part for part in forwarded if part]
    if hops and len(forwarded) >= hops:
        return forwarded[-hops][:45]
    return request.META.get("REMOTE_ADDR", "")[:45]


def username_digest(username: str) -> str:
    # Case-folded: "Alice" and "alice" share one count, so case games buy no extra guesses.
    return salted_hmac(
        "connections_app.throttle", username.casefold(), algorithm="sha256"
    ).hexdigest()


def attempt_begin(*, username: str, address: str) -> LoginFailure:
    """Record an attempt as failed until it succeeds; raise Throttled when over a limit."""
    # No address known (gunicorn on a Unix socket, say): all such attempts share one count,
    # rather than escaping the per-address limit.
    address = address or "unknown"
    now = timezone.now()
    window = settings.LOGIN_FAILURE_WINDOW
    LoginFailure.objects.filter(created_at__lt=now - window).delete()
    attempt = LoginFailure.objects.create(
        username_digest=username_digest(username), address=address, created_at=now
    )
    earlier = LoginFailure.objects.filter(created_at__gte=now - window, id__lt=attempt.id)
    limits = [
        (earlier.filter(username_digest=attempt.username_digest), settings.LOGIN_FAILURES_PER_USER),
        (earlier.filter(address=address), settings.LOGIN_FAILURES_PER_ADDRESS),
    ]
    for failures, limit in limits:
        # Locked while `limit` failures lie within the window: until the limit-th newest leaves it.
        times = list(failures.order_by("-created_at").values_list("created_at", flat=True)[:limit])
        if len(times) >= limit:
            attempt.delete()  # a refused attempt does not extend the lock
            raise Throttled(times[-1] + window - now)
    return attempt


def attempt_succeeded(attempt: LoginFailure) -> None:
    """A successful sign-in clears its user's failures (the address keeps its count)."""
    LoginFailure.objects.filter(username_digest=attempt.username_digest).delete()


def throttled_message(minutes: int) -> str:
    return ngettext(
        "Too many failed sign-ins for this account or from this address. "
        "Try again in %(minutes)d minute.",
        "Too many failed sign-ins for this account or from this address. "
        "Try again in %(minutes)d minutes.",
        minutes,
    ) % {"minutes": minutes}


def _begin(request, username: str) -> LoginFailure:
    """attempt_begin for a form; over a limit, the form's error says for how long."""
    try:
        return attempt_begin(username=username, address=client_address(request) if request else "")
    except Throttled as refused:
        minutes = max(1, math.ceil(refused.retry_after.total_seconds() / 60))
        raise ValidationError(throttled_message(minutes), code="throttled") from None


class ThrottleMixin:
    """For AuthenticationForm and its subclasses: refuses before the password is checked."""

    def clean(self):
        username = self.cleaned_data.get("username")
        if not username or not self.cleaned_data.get("password"):
            return super().clean()  # the field errors say what is missing
        attempt = _begin(self.request, username)
        cleaned = super().clean()  # a ValidationError leaves the attempt counted as failed
        attempt_succeeded(attempt)
        return cleaned


class LoginForm(ThrottleMixin, AuthenticationForm):
    pass


class AdminLoginForm(ThrottleMixin, AdminAuthenticationForm):
    pass


class PasswordChangeForm(auth_forms.PasswordChangeForm):
    """Each old password tried counts as a sign-in: a stolen session must not let anyone
    guess the account's password without limit."""

    def __init__(self, user, *args, request=None, **kwargs):
        self.request = request
        super().__init__(user, *args, **kwargs)

    def clean_old_password(self):
        attempt = _begin(self.request, self.user.get_username())
        old = super().clean_old_password()  # wrong: the attempt stays counted as failed
        attempt_succeeded(attempt)
        return old


class AdminPasswordChangeForm(PasswordChangeForm):
    required_css_class = "required"  # as the admin's own


class PasswordChangeView(auth_views.PasswordChangeView):
    form_class = PasswordChangeForm

    def get_form_kwargs(self):
        return {**super().get_form_kwargs(), "request": self.request}


def admin_password_change(request):
    """The admin's password change page as AdminSite.password_change makes it, with the
    throttled form (Django's admin takes no other form there)."""
    request.current_app = admin.site.name
    return PasswordChangeView.as_view(
        form_class=AdminPasswordChangeForm,
        success_url=reverse("admin:password_change_done"),
        extra_context=admin.site.each_context(request),
    )(request)
