"""Hardening: error reports without secrets, deploy check, headers, sign-in throttle, sessions."""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import secrets
import subprocess
import sys
import time
import uuid
from pathlib import Path
from urllib.parse import quote, quote_plus

import pytest
from axes.models import AccessAttempt, AccessFailureLog, AccessLog
from django.contrib.sessions.models import Session
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from django.utils.html import escape
from django.views.debug import ExceptionReporter

from connections_app import document as doc
from connections_app import eventbridge, services, signin, vault
from connections_app.models import Target

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "pw-for-tests-only"  # what tests/conftest.py's user_factory sets
PROD_ENV = {
    "DEBUG": "False",
    "SECRET_KEY": secrets.token_urlsafe(50),
    "AUDIT_HMAC_KEY": secrets.token_urlsafe(50),
    "ALLOWED_HOSTS": "connections.example.com",
    "DJANGO_SETTINGS_MODULE": "config.settings",
}


# ---------------------------------------------------------------------------
# Error reports


def _report(call, *args, **kwargs) -> str:
    """The text and HTML reports AdminEmailHandler builds, for the exception `call` raises.

    The traceback starts in this frame, which holds the exception as Django's own handler
    frame does; the test's own locals (the canaries) stay out of it.
    """
    try:
        call(*args, **kwargs)
    except Exception as exc:
        reporter = ExceptionReporter(None, type(exc), exc, exc.__traceback__, is_email=True)
        return reporter.get_traceback_text() + "\n" + reporter.get_traceback_html()
    raise AssertionError("the call was meant to fail")


def _forms(value: str) -> list[str]:
    """The value as it could appear: raw, escaped, URL-encoded, JSON-escaped, base64."""
    forms = {value, escape(value), quote(value), quote_plus(value), json.dumps(value)[1:-1]}
    raw = value.encode()
    for shift in range(3):  # base64 of the value at each alignment inside a longer text
        encoded = base64.b64encode(b"x" * shift + raw).decode()
        core = encoded[4 if shift else 0 : -4]
        forms.update({core, core.replace("+", "-").replace("/", "_")})
    return sorted(forms)


def _assert_absent(report: str, *values: str) -> None:
    for value in values:
        for form in _forms(value):
            assert form not in report, f"a secret appears in the report as {form!r}"


@pytest.fixture
def sdk_fault():
    """Make the HTTP layer under create_connection fail with an unexpected error.

    botocore's own event hook, after the payload was serialised: its frames (api_params,
    request_dict) hold the secret values, as they would for any bug below the SDK's API.
    """

    def boom(**kwargs):
        raise RuntimeError("fault injected below create_connection")

    client = eventbridge.events_client(Target.default(), retries=False)
    client.meta.events.register("before-send.events.CreateConnection", boom)
    yield
    client.meta.events.unregister("before-send.events.CreateConnection", boom)


@pytest.fixture
def non_string_secret(bao_cli):
    """A secret whose key holds a JSON object, not a string: refused after it was read."""
    value = f"CANARY{secrets.token_hex(10)}"
    path = f"secret/canary/nested-{uuid.uuid4().hex[:8]}"
    bao_cli("kv", "put", path, "-", input_text=json.dumps({"password": {"inner": value}}))
    return f"{path}#password", value


def test_report_hides_a_value_refused_after_it_was_read(servers, non_string_secret):
    reference, value = non_string_secret

    report = _report(vault.read, vault.parse_reference(reference))

    assert "is not a string" in report and "_pick" in report
    assert "********************" in report  # the frames are there, their values hidden
    _assert_absent(report, value)


def test_report_hides_values_when_resolving_a_document_fails(
    servers, make_document, non_string_secret
):
    reference, value = non_string_secret
    document = make_document("BASIC")
    document["AuthParameters"]["BasicAuthParameters"]["Password"]["vault"] = reference

    report = _report(doc.resolve, document, vault.read_all)

    assert "is not a string" in report and "resolve" in report
    _assert_absent(report, value)


def test_report_hides_the_payload_when_the_sdk_fails(
    servers, requester, approver, make_document, canaries, sdk_fault
):
    request = services.request_create(requester=requester, document=make_document("BASIC"))

    report = _report(
        services.request_approve,
        request=request,
        approver=approver,
        seen_hash=request.document_hash,
    )

    assert "fault injected below create_connection" in report
    assert "botocore" in report and "create_connection" in report
    _assert_absent(report, canaries["password"], canaries["header_token"])


def test_report_hides_a_vault_token_in_flight(settings, canaries):
    """A token with a character HTTP headers cannot carry fails deep in http.client."""
    token = f"hvs.CANARYTOKEN{secrets.token_hex(8)}\u2026"
    settings.VAULT_TOKEN = token
    vault.reset_client()

    report = _report(vault.read, vault.parse_reference("secret/canary/basic#password"))

    assert "UnicodeEncodeError" in report and "http/client.py" in report
    _assert_absent(report, token, token[:-1])


def test_health_probe_with_such_a_token_answers_and_mails_nothing(
    servers, settings, client, mailoutbox
):
    """/healthz is anonymous: a bad token must make it say "not authenticated", not mail a
    report of hvac's frames (which hold the token) to the admins on every probe."""
    settings.DEBUG = False
    settings.ADMINS = [("ops", "ops@example.com")]
    token = f"hvs.CANARYTOKEN{secrets.token_hex(8)}\u2026"
    settings.VAULT_TOKEN = token
    vault.reset_client()

    response = client.get("/healthz")

    assert response.status_code == 503
    assert response.json()["vault"] == {
        "reachable": True, "sealed": False, "authenticated": False, "ok": False
    }  # fmt: skip
    assert mailoutbox == []
    report = _report(vault._client.call, lambda c: c.auth.token.lookup_self())
    assert "UnicodeEncodeError" in report
    _assert_absent(report, token, token[:-1])


@pytest.fixture
def approle_mount(approle_login):
    """An AppRole with no policy: the tests give it a wrong secret id."""
    return approle_login(None)[2]


def test_report_hides_approle_credentials_after_a_refused_login(servers, approle_mount, settings):
    """hvac's frames (role_id, secret_id) are in the report as the refusal's cause."""
    settings.VAULT_SECRET_ID = f"CANARYSECRETID{secrets.token_hex(8)}"
    vault.reset_client()

    report = _report(vault.check, vault.parse_reference("secret/canary/basic#password"))

    assert "VaultPermissionDenied" in report and "hvac" in report
    assert "VAULT_ROLE_ID" in report  # listed among the settings, value hidden
    _assert_absent(report, settings.VAULT_SECRET_ID, settings.VAULT_ROLE_ID)


def test_reporter_filter_hides_vault_and_audit_settings(settings, rf):
    from connections_app.reporting import SecretSafeExceptionReporterFilter

    settings.VAULT_ROLE_ID = "role-id-" + secrets.token_hex(8)
    settings.AUDIT_EXPORT_BUCKET = "bucket-" + secrets.token_hex(8)  # any AUDIT_* name
    request = rf.get("/", DATABASE_URL="postgres://app:dbpw@db/app", VAULT_ADDR="http://vault")
    safe = SecretSafeExceptionReporterFilter()

    shown = safe.get_safe_settings()
    meta = safe.get_safe_request_meta(request)

    hidden = safe.cleansed_substitute
    for name in ("VAULT_ROLE_ID", "VAULT_TOKEN", "VAULT_SECRET_ID", "AUDIT_HMAC_KEY",
                 "AUDIT_EXPORT_BUCKET", "SECRET_KEY"):  # fmt: skip
        assert shown[name] == hidden, name
    assert meta["DATABASE_URL"] == hidden and meta["VAULT_ADDR"] == hidden
    assert shown["TIME_ZONE"] == "UTC"  # everything else stays readable


@pytest.mark.parametrize("fault", ["sdk", "vault_token"])
def test_500_during_approval_mails_admins_a_report_without_secrets(
    servers,
    fault,
    request,
    settings,
    requester,
    approver,
    make_document,
    canaries,
    openbao,
    mailoutbox,
):
    """Through the view, Django's handler and the configured AdminEmailHandler (HTML too)."""
    settings.ADMINS = [("Ops", "ops@example.com")]
    assert settings.DEBUG is False
    pending = services.request_create(requester=requester, document=make_document("API_KEY"))
    token = openbao.extra["token"]
    if fault == "sdk":
        request.getfixturevalue("sdk_fault")
        expected = "fault injected below create_connection"
    else:  # a token pasted with a character HTTP cannot carry: fails while resolving
        settings.VAULT_TOKEN = token = f"{token}\u2026"
        vault.reset_client()
        expected = "UnicodeEncodeError"
    client = Client(raise_request_exception=False)
    client.force_login(approver)

    response = client.post(
        reverse("request_approve", args=[pending.pk]),
        {"document_hash": pending.document_hash, "comment": "ok"},
    )

    assert response.status_code == 500
    assert b"Something went wrong" in response.content
    assert len(mailoutbox) == 1
    mail = mailoutbox[0]
    html = mail.alternatives[0][0]
    assert mail.to == ["ops@example.com"] and "Internal Server Error" in mail.subject
    assert expected in mail.body and expected in html
    assert "Local Vars" in html and "sensitive_variables_wrapper" in html
    _assert_absent(
        mail.subject + mail.body + html,
        canaries["api_key"],
        canaries["header_token"],
        token,
        openbao.extra["token"],
        settings.SECRET_KEY,
        settings.AUDIT_HMAC_KEY,
        client.cookies[settings.SESSION_COOKIE_NAME].value,
    )


# ---------------------------------------------------------------------------
# Deployment settings


def _run(*args, env):
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DJANGO_", "SECURE_", "SESSION_", "VAULT_", "AUDIT_"))
        and k not in ("DEBUG", "SECRET_KEY", "DATABASE_URL", "ALLOWED_HOSTS")
    }
    return subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_check_deploy_has_no_warnings_in_production():
    done = _run("manage.py", "check", "--deploy", "--fail-level", "WARNING", env=PROD_ENV)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "System check identified no issues (0 silenced)." in done.stdout
    assert "WARNING" not in done.stdout + done.stderr


def test_production_settings_are_hardened():
    code = (
        "import json, django; django.setup(); from django.conf import settings as s; "
        "print(json.dumps({k: getattr(s, k) for k in ("
        "'SECURE_SSL_REDIRECT', 'SESSION_COOKIE_SECURE', 'CSRF_COOKIE_SECURE', "
        "'SESSION_COOKIE_HTTPONLY', 'CSRF_COOKIE_HTTPONLY', 'SESSION_EXPIRE_AT_BROWSER_CLOSE', "
        "'SECURE_HSTS_SECONDS', 'X_FRAME_OPTIONS', 'SESSION_COOKIE_AGE', "
        "'DEFAULT_EXCEPTION_REPORTER_FILTER', 'MIDDLEWARE')}))"
    )
    done = _run("-c", code, env=PROD_ENV)
    assert done.returncode == 0, done.stderr
    values = json.loads(done.stdout)
    for name in (
        "SECURE_SSL_REDIRECT",
        "SESSION_COOKIE_SECURE",
        "CSRF_COOKIE_SECURE",
        "SESSION_COOKIE_HTTPONLY",
        "CSRF_COOKIE_HTTPONLY",
        "SESSION_EXPIRE_AT_BROWSER_CLOSE",
    ):
        assert values[name] is True, name
    assert values["SECURE_HSTS_SECONDS"] >= 31536000
    assert values["X_FRAME_OPTIONS"] == "DENY"
    assert values["SESSION_COOKIE_AGE"] <= 8 * 3600
    assert values["DEFAULT_EXCEPTION_REPORTER_FILTER"].endswith("SecretSafeExceptionReporterFilter")
    assert "csp.middleware.CSPMiddleware" in values["MIDDLEWARE"]


EXPECTED_CSP = {
    "default-src": ["'self'"],
    "script-src": ["'self'"],
    "style-src": ["'self'"],
    "img-src": ["'self'", "data:"],
    "form-action": ["'self'"],
    "frame-ancestors": ["'none'"],
    "base-uri": ["'none'"],
    "object-src": ["'none'"],
}


def _policy(header: str) -> dict[str, list[str]]:
    directives = [part.split() for part in header.split(";") if part.strip()]
    return {name: values for name, *values in directives}


def test_security_headers_and_cookies_on_sign_in(settings, client, approver):
    settings.SESSION_COOKIE_SECURE = settings.CSRF_COOKIE_SECURE = True  # as in production
    url = reverse("login")

    page = client.get(url, secure=True)
    signed_in = client.post(url, {"username": approver.username, "password": PASSWORD}, secure=True)

    for response in (page, signed_in):
        assert _policy(response["Content-Security-Policy"]) == EXPECTED_CSP
        assert "unsafe-inline" not in response["Content-Security-Policy"]
        assert response["Strict-Transport-Security"].startswith("max-age=31536000")
        assert response["X-Frame-Options"] == "DENY"
        assert response["X-Content-Type-Options"] == "nosniff"
        assert response["Referrer-Policy"] == "same-origin"
    assert signed_in.status_code == 302
    session = signed_in.cookies[settings.SESSION_COOKIE_NAME]
    assert session["secure"] and session["httponly"] and session["samesite"] == "Lax"
    assert not session["max-age"] and not session["expires"]  # ends with the browser
    csrf = page.cookies[settings.CSRF_COOKIE_NAME]
    assert csrf["secure"] and csrf["httponly"]


def test_pages_carry_no_inline_script_or_style(requester_client):
    page = requester_client.get(reverse("request_new")).content.decode()
    assert "<script src=" in page
    for needle in ("<script>", "<style", " style=", " onclick=", " onload=", " onsubmit="):
        assert needle not in page


# ---------------------------------------------------------------------------
# Sessions


def test_session_ends_with_the_browser_and_after_its_age(settings, client, approver):
    client.post(reverse("login"), {"username": approver.username, "password": PASSWORD})
    assert client.session.get_expire_at_browser_close()
    assert client.get(reverse("approval_queue")).status_code == 200

    # An 8-hour-old session: its expiry date has passed, so the server refuses it.
    Session.objects.filter(session_key=client.session.session_key).update(
        expire_date=timezone.now() - dt.timedelta(seconds=1)
    )

    response = client.get(reverse("approval_queue"))
    assert response.status_code == 302 and response["Location"].startswith(reverse("login"))


def test_session_expiry_is_the_configured_age(settings, client, approver):
    before = timezone.now()
    client.post(reverse("login"), {"username": approver.username, "password": PASSWORD})
    stored = Session.objects.get(session_key=client.session.session_key)
    age = (stored.expire_date - before).total_seconds()
    assert settings.SESSION_COOKIE_AGE - 5 <= age <= settings.SESSION_COOKIE_AGE + 5


# ---------------------------------------------------------------------------
# Sign-in: failures locked per (username, address), slowed per username (django-axes)


@pytest.fixture
def pauses(monkeypatch) -> list[float]:
    """The slow-down pauses asked for, recorded instead of slept."""
    asked = []
    monkeypatch.setattr(signin, "_pause", asked.append)
    return asked


def _sign_in(client, username, password, address="10.0.0.1", url=None, **meta):
    return client.post(
        url or reverse("login"),
        {"username": username, "password": password},
        REMOTE_ADDR=address,
        **meta,
    )


def _signed_in(client) -> bool:
    return "_auth_user_id" in client.session


def _throttled(response) -> bool:
    form = response.context["form"]
    return response.status_code == 200 and form.has_error("__all__", code="throttled")


def test_pair_locked_after_five_failures(client, approver, pauses):
    for _ in range(5):
        response = _sign_in(client, approver.username, "wrong", address="10.0.1.1")
        assert not _throttled(response) and not _signed_in(client)

    # The right password from the same address: refused before the password is checked.
    response = _sign_in(client, approver.username, PASSWORD, address="10.0.1.1")

    assert _throttled(response) and not _signed_in(client)
    attempt = AccessAttempt.objects.get()
    assert attempt.failures_since_start == 5  # refused attempts do not extend the lock
    # The same user from another address, and another user from this one, are not locked.
    assert not _throttled(_sign_in(Client(), "someone-else", "wrong", address="10.0.1.1"))
    other = Client()
    assert _sign_in(other, approver.username, PASSWORD, address="10.0.1.2").status_code == 302
    assert _signed_in(other)


def test_failures_slow_the_username_down_from_every_address(client, approver, pauses, settings):
    settings.LOGIN_SLOWDOWN_STEP, settings.LOGIN_SLOWDOWN_MAX_SECONDS = 0.5, 3.0
    for n in range(8):
        _sign_in(client, approver.username, "wrong", address=f"10.0.2.{n}")
    _sign_in(client, "someone-else", "wrong", address="10.0.2.9")  # slows only its own name

    response = _sign_in(client, approver.username, PASSWORD, address="10.0.2.99")

    assert response.status_code == 302 and _signed_in(client)
    # No pause before the first failure, then 0.5 s more per failure, capped at 3 s.
    assert pauses == [0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.0, 3.0]


def test_the_slow_down_really_waits(client, approver, settings):
    settings.LOGIN_SLOWDOWN_STEP, settings.LOGIN_SLOWDOWN_MAX_SECONDS = 0.1, 0.3
    for n in range(5):
        _sign_in(client, approver.username, "wrong", address=f"10.0.3.{n}")
    started = time.monotonic()
    response = _sign_in(client, approver.username, PASSWORD, address="10.0.3.99")
    assert response.status_code == 302
    assert time.monotonic() - started >= 0.3


def test_attempts_without_an_address_share_one_count_per_username(client, approver, pauses):
    """gunicorn on a Unix socket gives REMOTE_ADDR "": such guesses must not escape the count."""
    for _ in range(5):
        assert not _throttled(_sign_in(client, approver.username, "wrong", address=""))
    assert _throttled(_sign_in(client, approver.username, PASSWORD, address=""))
    assert AccessAttempt.objects.get().ip_address is None
    assert _sign_in(client, approver.username, PASSWORD, address="10.0.4.1").status_code == 302


def test_old_password_guesses_on_the_change_form_count(client, approver, settings, pauses):
    client.force_login(approver)
    url = reverse("password_change")
    new = {"new_password1": "An0ther-long-passphrase", "new_password2": "An0ther-long-passphrase"}

    def refused(old_password) -> str:
        response = client.post(url, {"old_password": old_password, **new}, REMOTE_ADDR="10.0.5.5")
        assert response.status_code == 200  # the form again, password unchanged
        return response.context["form"].errors.as_data()["old_password"][0].code

    for _ in range(settings.AXES_FAILURE_LIMIT):
        assert refused("wrong") == "password_incorrect"
    assert refused(PASSWORD) == "throttled"
    approver.refresh_from_db()
    assert approver.check_password(PASSWORD)
    # They are failed sign-ins: the sign-in page from that address is locked for the user too.
    assert _throttled(_sign_in(Client(), approver.username, PASSWORD, address="10.0.5.5"))
    assert len(pauses) == settings.AXES_FAILURE_LIMIT - 1


def test_old_password_guesses_on_the_admin_change_form_count(admin_user, settings, pauses):
    client = Client()
    client.force_login(admin_user)
    page = client.get("/admin/password_change/")
    assert page.status_code == 200 and "Django site admin" in page.content.decode()
    new = {"new_password1": "An0ther-long-passphrase", "new_password2": "An0ther-long-passphrase"}
    codes = []
    for old in ["wrong"] * settings.AXES_FAILURE_LIMIT + [PASSWORD]:
        response = client.post("/admin/password_change/", {"old_password": old, **new})
        codes.append(response.context["form"].errors.as_data()["old_password"][0].code)
    assert codes[-1] == "throttled" and set(codes[:-1]) == {"password_incorrect"}
    admin_user.refresh_from_db()
    assert admin_user.check_password(PASSWORD)


def test_password_change_still_works(client, approver):
    client.force_login(approver)
    new = "An0ther-long-passphrase"
    response = client.post(
        reverse("password_change"),
        {"old_password": PASSWORD, "new_password1": new, "new_password2": new},
    )
    assert response.status_code == 302
    assert client.get(response["Location"]).status_code == 200  # the "done" page
    approver.refresh_from_db()
    assert approver.check_password(new)


def test_lock_message_is_shown_on_the_form(client, approver, pauses):
    for _ in range(5):
        _sign_in(client, approver.username, "wrong")

    response = _sign_in(client, approver.username, PASSWORD)

    page = response.content.decode()
    assert 'role="alert"' in page
    assert "Too many failed sign-ins from this address for this account." in page
    assert "Try again in 15 minutes." in page


def test_success_clears_the_pairs_failures(client, approver, pauses):
    for _ in range(4):
        _sign_in(client, approver.username, "wrong")
    assert _sign_in(client, approver.username, PASSWORD).status_code == 302
    client.logout()
    for _ in range(4):
        assert not _throttled(_sign_in(client, approver.username, "wrong"))

    # Eight failures in the window, but only four since the success.
    assert _sign_in(client, approver.username, PASSWORD).status_code == 302


def test_lock_lifts_when_the_window_has_passed(client, approver, settings, pauses):
    for _ in range(5):
        _sign_in(client, approver.username, "wrong")
    assert _throttled(_sign_in(client, approver.username, PASSWORD))

    # The failures are now 50 seconds from leaving the window: still locked, 1 minute to go.
    AccessAttempt.objects.update(
        attempt_time=timezone.now() - settings.AXES_COOLOFF_TIME + dt.timedelta(seconds=50)
    )
    response = _sign_in(client, approver.username, PASSWORD)
    assert _throttled(response) and "Try again in 1 minute." in response.content.decode()

    AccessAttempt.objects.update(
        attempt_time=timezone.now() - settings.AXES_COOLOFF_TIME - dt.timedelta(seconds=1)
    )
    assert _sign_in(client, approver.username, PASSWORD).status_code == 302


def test_admin_sign_in_is_locked_too(client, admin_user, pauses):
    url = reverse("admin:login")
    for _ in range(5):
        _sign_in(client, admin_user.username, "wrong", url=url)

    response = _sign_in(client, admin_user.username, PASSWORD, url=url)

    assert _throttled(response) and not _signed_in(client)


def test_no_typed_username_or_password_is_stored(client, approver, pauses):
    typed = f"password-typed-as-username-{secrets.token_hex(6)}"
    wrong = f"wrong-password-{secrets.token_hex(6)}"
    _sign_in(client, typed, wrong)
    _sign_in(client, approver.username, wrong)
    changer = Client()
    changer.force_login(approver)
    changer.post(
        reverse("password_change"),
        {"old_password": wrong, "new_password1": wrong + "1", "new_password2": wrong + "1"},
    )
    stored = json.dumps(
        [list(model.objects.values()) for model in (AccessAttempt, AccessLog, AccessFailureLog)],
        default=str,
    )
    assert typed not in stored and wrong not in stored and approver.username not in stored
    row = AccessAttempt.objects.filter(username=signin.username_digest(typed)).get()
    assert row.ip_address == "10.0.0.1"


def test_the_password_reset_pages_are_gone(client):
    for url in ("/accounts/password_reset/", "/accounts/password_reset/done/",
                "/accounts/reset/MQ/set-password/", "/accounts/reset/done/"):  # fmt: skip
        assert client.get(url).status_code == 404, url
        assert client.post(url, {"email": "admin@example.com"}).status_code in (403, 404), url


@pytest.mark.parametrize(
    ("trusted", "peer", "forwarded", "expected"),
    [
        ([], "10.0.0.1", "203.0.113.5", "10.0.0.1"),  # no proxy trusted: anyone can forge it
        (["10.0.0.2"], "10.0.0.1", "203.0.113.5", "10.0.0.1"),  # the peer is not a proxy
        (["10.0.0.2"], "10.0.0.2", "198.51.100.1, 203.0.113.5", "203.0.113.5"),
        (["10.0.0.0/24"], "10.0.0.2", "198.51.100.1, 203.0.113.5, 10.0.0.3", "203.0.113.5"),
        (["10.0.0.0/24", "2001:db8::/32"], "2001:db8::1", "203.0.113.5", "203.0.113.5"),
        (["10.0.0.2"], "::ffff:10.0.0.2", "203.0.113.5", "203.0.113.5"),
        (["10.0.0.2"], "10.0.0.2", "", "10.0.0.2"),  # the proxy's own request
        (["10.0.0.0/24"], "10.0.0.2", "10.0.0.9, 10.0.0.3", "10.0.0.9"),  # proxies all along
        (["10.0.0.2"], "10.0.0.2", "203.0.113.5, not-an-address", None),
        ([], "", "203.0.113.5", None),  # a Unix socket: no address
    ],
)
def test_client_address_behind_trusted_proxies(rf, settings, trusted, peer, forwarded, expected):
    settings.TRUSTED_PROXIES = trusted
    request = rf.get("/", REMOTE_ADDR=peer, HTTP_X_FORWARDED_FOR=forwarded)
    assert signin.client_address(request) == expected
