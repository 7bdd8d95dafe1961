"""Attacks on the open doors: sign-in lockout as denial of service, forged X-Forwarded-For,
a /healthz flood, an absurd row count, weak keys, and credentials in error reports."""

from __future__ import annotations

import os
import secrets
import threading

import pytest
from axes.models import AccessAttempt
from django.db import connections
from django.test import Client
from django.urls import reverse
from django.views.debug import ExceptionReporter

from connections_app import signin
from tests.faults import path_rule
from tests.security.forms import form
from tests.test_hardening import _assert_absent
from tests.test_settings import PROD_ENV, _manage

PASSWORD = "pw-for-tests-only"  # what tests/conftest.py's user_factory sets
IMPROPERLY = "django.core.exceptions.ImproperlyConfigured: "


@pytest.fixture
def pauses(monkeypatch) -> list[float]:
    """The sign-in slow-down's pauses, recorded instead of slept."""
    asked = []
    monkeypatch.setattr(signin, "_pause", asked.append)
    return asked


def _sign_in(username, password, address, **meta):
    client = Client()
    response = client.post(
        reverse("login"), {"username": username, "password": password}, REMOTE_ADDR=address, **meta
    )
    if response.status_code == 302:
        return "signed in"
    if response.context["form"].has_error("__all__", code="throttled"):
        return "locked"
    return "wrong password"


# ---------------------------------------------------------------------------
# Sign-in


@pytest.mark.django_db
def test_fifty_guesses_from_one_address_lock_out_no_one_else(
    approver, requester, settings, pauses, security_report
):
    settings.LOGIN_SLOWDOWN_STEP, settings.LOGIN_SLOWDOWN_MAX_SECONDS = 0.5, 3.0
    answers = [_sign_in(approver.username, "wrong", "203.0.113.66") for _ in range(50)]
    checked = pauses.copy()

    owner = _sign_in(approver.username, PASSWORD, "198.51.100.7")
    owner_pause = pauses[len(checked)]
    neighbour = _sign_in(requester.username, PASSWORD, "203.0.113.66")
    still_locked = _sign_in(approver.username, PASSWORD, "203.0.113.66")

    security_report.add(
        "abuse",
        "sign-in lockout as denial of service: 50 wrong passwords, one account, one address",
        f"{answers.count('wrong password')} checked, {answers.count('locked')} refused unchecked "
        f"(that pair locked); the owner from another address: {owner} after a "
        f"{owner_pause:.1f} s pause; another account from the guesser's address: {neighbour}; "
        f"the right password from the guesser's address: {still_locked}",
    )
    limit = settings.AXES_FAILURE_LIMIT
    assert answers == ["wrong password"] * limit + ["locked"] * (50 - limit)
    assert owner == "signed in" and neighbour == "signed in"
    assert still_locked == "locked"
    assert owner_pause == limit * 0.5


@pytest.mark.django_db
def test_guesses_from_many_addresses_only_slow_the_owner(approver, settings, pauses,
                                                         security_report):  # fmt: skip
    settings.LOGIN_SLOWDOWN_STEP, settings.LOGIN_SLOWDOWN_MAX_SECONDS = 0.5, 3.0
    answers = [_sign_in(approver.username, "wrong", f"10.66.0.{n}") for n in range(50)]
    guesser_pauses = sum(pauses)

    owner = _sign_in(approver.username, PASSWORD, "198.51.100.8")

    security_report.add(
        "abuse",
        "sign-in guesses for one account from 50 addresses",
        f"{answers.count('wrong password')} checked, each after a pause growing to "
        f"{max(pauses[:-1]):.1f} s ({guesser_pauses - pauses[-1]:.0f} s in all); the owner: "
        f"{owner} after a {pauses[-1]:.1f} s pause, never refused",
    )
    assert answers == ["wrong password"] * 50
    assert owner == "signed in" and pauses[-1] == settings.LOGIN_SLOWDOWN_MAX_SECONDS


@pytest.mark.django_db
def test_forged_x_forwarded_for(approver, requester, settings, pauses, security_report):
    settings.TRUSTED_PROXIES = ["10.9.0.1"]
    # An untrusted peer naming a new address in every attempt: the header is ignored.
    forged = [
        _sign_in(approver.username, "wrong", "203.0.113.77", HTTP_X_FORWARDED_FOR=f"192.0.2.{n}")
        for n in range(10)
    ]
    forged_rows = set(AccessAttempt.objects.values_list("ip_address", flat=True))
    # Behind the trusted proxy: the client is what the proxy appended, whatever the client
    # put before it.
    proxied = [
        _sign_in(approver.username, "wrong", "10.9.0.1",
                 HTTP_X_FORWARDED_FOR=f"192.0.2.{n}, 198.51.100.20")
        for n in range(10)
    ]  # fmt: skip
    neighbour = _sign_in(
        approver.username, PASSWORD, "10.9.0.1", HTTP_X_FORWARDED_FOR="198.51.100.21"
    )
    rows = set(AccessAttempt.objects.values_list("ip_address", flat=True))

    security_report.add(
        "abuse",
        "forged X-Forwarded-For on sign-in (TRUSTED_PROXIES=10.9.0.1)",
        f"from an untrusted peer with a new forged address each time: {forged.count('locked')} "
        f"of 10 refused, counted as {sorted(forged_rows)}; through the trusted proxy with a "
        f"forged entry before the real one: {proxied.count('locked')} of 10 refused, counted "
        f"as {sorted(rows - forged_rows)}; another client behind the same proxy: {neighbour}",
    )
    assert forged.count("locked") == 10 - settings.AXES_FAILURE_LIMIT
    assert forged_rows == {"203.0.113.77"}
    assert proxied.count("locked") == 10 - settings.AXES_FAILURE_LIMIT
    assert rows - forged_rows == {"198.51.100.20"}
    assert neighbour == "signed in"


# ---------------------------------------------------------------------------
# /healthz


@pytest.mark.django_db(transaction=True)
def test_healthz_flood_asks_vault_and_aws_once(calls, settings, security_report):
    settings.HEALTH_CACHE_SECONDS = 5
    # A slow Vault, so that the callers really arrive while the one probe runs.
    calls.vault.rules.append(path_rule("/v1/sys/health", ("delay", 0.5)))
    start = threading.Barrier(50)
    statuses = []

    def hit():
        try:
            start.wait(10)
            statuses.append(Client().get("/healthz").status_code)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=hit) for _ in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    vault_health = sum("/v1/sys/health" in path for _, path, _ in calls.vault.seen)
    vault_total, aws_total = calls.total()

    security_report.add(
        "abuse",
        "/healthz flood: 50 anonymous GETs at once (Vault health slowed to 0.5 s)",
        f"statuses {sorted(set(statuses))}; Vault health calls {vault_health} (Vault calls "
        f"{vault_total} in all), AWS calls {aws_total}: one probe per "
        f"{settings.HEALTH_CACHE_SECONDS:g} s per process",
    )
    assert statuses == [200] * 50
    assert vault_health == 1 and vault_total == 2  # sys/health, then the token's lookup-self
    assert aws_total == 1 and calls.aws.targets("ListConnections") == 1


# ---------------------------------------------------------------------------
# The request form's row counts


@pytest.mark.django_db
def test_a_5000_digit_row_count_is_not_a_500(requester_client, calls, security_report):
    huge = "9" * 5000  # int() refuses more than 4,300 digits
    base = form("API_KEY", "huge-count", **{"inv_header-TOTAL_FORMS": huge})
    base.pop("_save")
    tries = {
        "Add row on that list": base | {"_add_row": "inv_header"},
        "Add row on another list": base | {"_add_row": "inv_query"},
        "Save": base | {"_save": ""},
        "Check": base | {"_check": "all"},
    }
    statuses = {}
    for name, data in tries.items():
        response = requester_client.post(reverse("request_new"), data)  # a 500 raises here
        statuses[name] = response.status_code
    rows = requester_client.post(reverse("request_new"), tries["Add row on that list"])
    shown = rows.context["forms"].formsets["inv_header"].total_form_count()

    security_report.add(
        "hostile inputs",
        "a 5,000-digit <list>-TOTAL_FORMS (no-JavaScript Add row, Save, Check)",
        f"statuses {statuses}; Add row on that list shows {shown} rows (the maximum); "
        f"Vault calls {calls.total()[0]}, AWS calls {calls.total()[1]}",
    )
    assert set(statuses.values()) <= {200, 400}
    assert shown == 100
    assert calls.total()[1] == 0


# ---------------------------------------------------------------------------
# Keys and error reports


def test_weak_keys_are_refused_at_start_up(security_report):
    keys = {
        "SECRET_KEY of 31 bytes": {"SECRET_KEY": "s" * 31},
        "AUDIT_HMAC_KEY of 31 bytes": {"AUDIT_HMAC_KEY": "a" * 31},
        "both 'changeme'": {"SECRET_KEY": "changeme", "AUDIT_HMAC_KEY": "changeme2"},
    }
    outcomes = {}
    for name, env in keys.items():
        done = _manage("check", env={**PROD_ENV, **env})
        last = done.stderr.strip().splitlines()[-1:] or [""]
        outcomes[name] = (done.returncode, last[0].removeprefix(IMPROPERLY))
    good = {"SECRET_KEY": secrets.token_urlsafe(50), "AUDIT_HMAC_KEY": secrets.token_urlsafe(50)}
    accepted = _manage("check", env={**PROD_ENV, **good}).returncode

    security_report.add(
        "configuration",
        "weak keys at a production start (DEBUG off)",
        "; ".join(
            f"{name}: refused, “{message}”" if code else f"{name}: STARTED"
            for name, (code, message) in outcomes.items()
        )
        + f"; keys of secrets.token_urlsafe(50): {'started' if accepted == 0 else 'refused'}",
    )
    for name, (code, message) in outcomes.items():
        assert code != 0 and "must be at least 32 bytes" in message, name
        assert "secrets.token_urlsafe" in message
    assert accepted == 0


def _report(request) -> str:
    """The text and HTML reports AdminEmailHandler mails, for an error during `request`."""
    try:
        raise RuntimeError("boom")
    except RuntimeError as exc:
        reporter = ExceptionReporter(request, type(exc), exc, exc.__traceback__, is_email=True)
        return reporter.get_traceback_text() + "\n" + reporter.get_traceback_html()


def test_credentials_in_urls_are_hidden_from_error_reports(rf, settings, monkeypatch,
                                                           security_report):  # fmt: skip
    canary = {name: f"CANARY{secrets.token_hex(8)}" for name in
              ("email", "redis", "broker", "setting", "nested")}  # fmt: skip
    # Under runserver, request.META holds the whole process environment.
    monkeypatch.setenv("EMAIL_URL", f"smtp+tls://ops:{canary['email']}@smtp.example.com:587")
    monkeypatch.setenv("REDIS_URL", f"redis://:{canary['redis']}@cache:6379/0")
    monkeypatch.setenv("QUEUE", f"amqp://worker:{canary['broker']}@mq.example.com/vhost")
    settings.PARTNER_ENDPOINT = f"https://svc:{canary['setting']}@partner.example.com/api"
    settings.CACHES = {
        **settings.CACHES,
        "shared": {"LOCATION": [f"redis://:{canary['nested']}@cache:6379/1"]},
    }
    request = rf.get("/connections/", **dict(os.environ))

    report = _report(request)

    security_report.add(
        "configuration",
        "credentials in URLs in a mailed error report (EMAIL_URL, REDIS_URL and an oddly named "
        "variable in request.META as runserver fills it; a setting; a nested cache LOCATION)",
        f"{len(canary)} canary passwords x every encoding: "
        f"{sum(c in report for c in canary.values())} found in the text and HTML reports; the "
        f"names still listed: {all(n in report for n in ('EMAIL_URL', 'REDIS_URL', 'QUEUE'))}",
    )
    _assert_absent(report, *canary.values())
    for name in ("EMAIL_URL", "REDIS_URL", "QUEUE", "PARTNER_ENDPOINT"):
        assert name in report  # listed, value starred
    assert "smtp.example.com" not in report  # the whole value, not just the password


# ---------------------------------------------------------------------------
# Scopes: another team's secret, a host that should never see one


@pytest.mark.django_db
@pytest.mark.usefixtures("servers")
def test_another_teams_secret_and_a_foreign_host(
    user_factory, approver, make_document, calls, security_report
):
    from django.contrib.auth.models import Group

    from connections_app import roles, services
    from connections_app.models import ConnectionRequest, Scope
    from tests.test_request_form import form_data

    team = Group.objects.create(name="team-a")
    team.permissions.set(Group.objects.get(name=roles.REQUESTERS).permissions.all())
    Scope.objects.create(
        group=team, path_prefixes="secret/canary/apikey\nsecret/canary/oauth/",
        allowed_hosts="auth.partner.example",
    )  # fmt: skip
    alice = user_factory("alice", groups=["team-a"])
    client = Client()
    client.force_login(alice)
    calls.reset()

    # Another team's path (secret/canary/basic), in the form and through Check.
    saved = client.post(reverse("request_new"), form_data("BASIC", "other-team"))
    beside = [e.code for e in saved.context["form"].errors.as_data().get("basic_password", [])]
    checked = client.post(reverse("reference_check"), {"reference": "secret/canary/basic#password"})
    reads_before_approval = len(calls.vault.seen)

    # Filed in scope, then the scope narrowed before the approval.
    request = services.request_create(requester=alice, document=make_document("API_KEY"))
    Scope.objects.filter(group=team).update(path_prefixes="secret/canary/oauth/")
    calls.reset()
    try:
        services.request_approve(
            request=request, approver=approver, seen_hash=request.document_hash
        )
        approval = "approved"
    except services.ActionRefused as exc:
        approval = f"refused ({exc.code})"
    approval_reads, creates = calls.secret_reads(), calls.aws.targets("CreateConnection")

    # The client secret sent to a host outside the allowed list.
    Scope.objects.filter(group=team).update(path_prefixes="secret/canary/")
    oauth = make_document("OAUTH_CLIENT_CREDENTIALS", name="foreign-host")
    oauth["AuthParameters"]["OAuthParameters"]["AuthorizationEndpoint"] = "https://evil.example/t"
    try:
        services.request_create(requester=alice, document=oauth)
        foreign = "filed"
    except services.DocumentInvalid as exc:
        foreign = f"refused ({', '.join(sorted({i.code for i in exc.issues}))})"

    security_report.add(
        "access",
        "a requester names another team's Vault path; a client secret sent to evil.example",
        f"save: {saved.status_code} with {beside} beside the field; Check: "
        f"{checked.json().get('code')}; Vault calls for both: {reads_before_approval}; approval "
        f"after the scope narrowed: {approval}, {approval_reads} secret reads, {creates} "
        f"create_connection calls; OAuth endpoint on evil.example: {foreign}",
    )
    assert saved.status_code == 400 and beside == ["out_of_scope"]
    assert checked.json()["code"] == "out_of_scope" and reads_before_approval == 0
    assert approval == "refused (out_of_scope)" and approval_reads == 0 and creates == 0
    assert ConnectionRequest.objects.get(pk=request.pk).status == ConnectionRequest.PENDING
    assert foreign == "refused (host_not_allowed)"


@pytest.mark.django_db
def test_no_password_reset_pages(security_report):
    urls = ("/accounts/password_reset/", "/accounts/password_reset/done/",
            "/accounts/reset/MQ/set-password/", "/accounts/reset/done/")  # fmt: skip
    answers = {url: Client().get(url).status_code for url in urls}
    security_report.add(
        "access",
        "password reset pages (no reset mail is configured)",
        ", ".join(f"{url}: {status}" for url, status in answers.items()),
    )
    assert set(answers.values()) == {404}
