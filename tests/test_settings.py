"""Production settings, deploy checks, roles, and logging that never carries a request body."""

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from connections_app import roles, services

ROOT = Path(__file__).resolve().parent.parent
PROD_ENV = {
    "DEBUG": "False",
    "SECRET_KEY": "x" * 60 + "-production-like-secret-key-for-checks",
    "AUDIT_HMAC_KEY": "y" * 50,
    "ALLOWED_HOSTS": "connections.example.com",
    "DJANGO_SETTINGS_MODULE": "config.settings",
}


def _manage(*args, env):
    base = {k: v for k, v in os.environ.items() if k not in ("SECRET_KEY", "AUDIT_HMAC_KEY")}
    for name in ("DEBUG", "SECURE_SSL_REDIRECT", "DATABASE_URL", "DJANGO_ALLOW_ASYNC_UNSAFE"):
        base.pop(name, None)
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize(
    "missing", [("SECRET_KEY",), ("AUDIT_HMAC_KEY",), ("SECRET_KEY", "AUDIT_HMAC_KEY")]
)
def test_production_refuses_missing_secrets(missing):
    env = {k: v for k, v in PROD_ENV.items() if k not in missing}
    done = _manage("check", env=env)
    assert done.returncode != 0
    for name in missing:
        assert name in done.stderr


def test_audit_key_must_differ_from_secret_key():
    done = _manage("check", env={**PROD_ENV, "AUDIT_HMAC_KEY": PROD_ENV["SECRET_KEY"]})
    assert done.returncode != 0
    assert "AUDIT_HMAC_KEY must differ from SECRET_KEY" in done.stderr


@pytest.mark.parametrize("name", ["SECRET_KEY", "AUDIT_HMAC_KEY"])
def test_production_refuses_a_key_shorter_than_32_bytes(name):
    done = _manage("check", env={**PROD_ENV, name: "k" * 31})
    assert done.returncode != 0
    assert f"{name} must be at least 32 bytes" in done.stderr
    assert "secrets.token_urlsafe" in done.stderr  # how to make a good one


def test_production_takes_keys_of_32_bytes():
    keys = {"SECRET_KEY": "s" * 32, "AUDIT_HMAC_KEY": "\u00e9" * 16}  # 16 two-byte characters
    done = _manage("check", env={**PROD_ENV, **keys})
    assert done.returncode == 0, done.stderr


def test_debug_fallback_keys_are_long_enough():
    done = _manage(
        "shell",
        "-c",
        "from django.conf import settings as s; "
        "print('lengths', len(s.SECRET_KEY.encode()), len(s.AUDIT_HMAC_KEY.encode()))",
        env={"DEBUG": "True", "DJANGO_SETTINGS_MODULE": "config.settings"},
    )
    assert done.returncode == 0, done.stderr
    lengths = done.stdout.split("lengths", 1)[1].split()
    assert len(lengths) == 2 and all(int(n) >= 32 for n in lengths), done.stdout


def test_production_refuses_a_trusted_proxy_that_is_no_address():
    done = _manage("check", env={**PROD_ENV, "TRUSTED_PROXIES": "10.0.0.1,nginx.local"})
    assert done.returncode != 0
    assert "TRUSTED_PROXIES" in done.stderr


def test_debug_runs_without_secrets():
    done = _manage("check", env={"DEBUG": "True", "DJANGO_SETTINGS_MODULE": "config.settings"})
    assert done.returncode == 0, done.stderr


def test_check_deploy_is_clean():
    done = _manage("check", "--deploy", "--fail-level", "WARNING", env=PROD_ENV)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.django_db
def test_groups_and_permissions_exist_after_migrate():
    from django.contrib.auth.models import Group

    for name, codenames in roles.GROUP_PERMISSIONS.items():
        group = Group.objects.get(name=name)
        assert set(group.permissions.values_list("codename", flat=True)) == set(codenames)


@pytest.mark.django_db
def test_role_permissions(requester, approver, auditor):
    assert requester.has_perm(roles.CAN_REQUEST) and not requester.has_perm(roles.CAN_APPROVE)
    assert approver.has_perm(roles.CAN_APPROVE) and not approver.has_perm(roles.CAN_REQUEST)
    assert auditor.has_perm(roles.CAN_AUDIT)
    assert not auditor.has_perm(roles.CAN_REQUEST) and not auditor.has_perm(roles.CAN_APPROVE)


class _Capture(logging.Handler):
    def __init__(self):
        super().__init__(level=logging.DEBUG)
        self.lines = []

    def emit(self, record):
        self.lines.append(self.format(record))


@pytest.mark.django_db
@pytest.mark.parametrize("kind", ["BASIC", "OAUTH_CLIENT_CREDENTIALS", "API_KEY"])
def test_no_secret_in_any_log_record_at_debug(
    servers, kind, requester, approver, make_document, canaries
):
    """Root at DEBUG with a handler of our own: botocore, urllib3 and hvac stay silent on bodies."""
    capture = _Capture()
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(capture)
    root.setLevel(logging.DEBUG)
    try:
        request = services.request_create(requester=requester, document=make_document(kind))
        done = services.request_approve(
            request=request, approver=approver, seen_hash=request.document_hash
        )
    finally:
        root.removeHandler(capture)
        root.setLevel(old_level)
    assert done.status == "created"
    text = "\n".join(capture.lines)
    for value in canaries.values():
        assert value not in text
    assert "Request body" not in text and "body=" not in text
    for name in ("botocore", "urllib3", "hvac"):
        assert logging.getLogger(name).getEffectiveLevel() >= logging.WARNING
