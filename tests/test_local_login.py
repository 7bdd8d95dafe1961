"""LOCAL_LOGIN=False: passwords are for superusers only (the break-glass accounts); everyone
else signs in with the identity provider."""

from __future__ import annotations

import pytest
from axes.models import AccessAttempt
from django.test import Client
from django.urls import reverse

from connections_app import signin

PASSWORD = "pw-for-tests-only"  # tests/conftest.py's user_factory

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _no_pauses(monkeypatch):
    monkeypatch.setattr(signin, "_pause", lambda seconds: None)


@pytest.fixture
def local_login_off(settings):
    settings.LOCAL_LOGIN = False


def _sign_in(client, username, password, url=None):
    return client.post(url or reverse("login"), {"username": username, "password": password})


def _signed_in(client) -> bool:
    return "_auth_user_id" in client.session


def test_a_non_superusers_right_password_is_refused_like_a_wrong_one(local_login_off, approver):
    right = _sign_in(Client(), approver.username, PASSWORD)
    wrong = _sign_in(Client(), approver.username, "wrong-password")

    for response in (right, wrong):
        assert response.status_code == 200
        assert response.context["form"].has_error("__all__", code="invalid_login")
    # The page tells nobody whether the password was right, and axes counts both.
    assert right.context["form"].errors == wrong.context["form"].errors
    assert AccessAttempt.objects.get().failures_since_start == 2


def test_a_superuser_still_signs_in_with_a_password(local_login_off, admin_user):
    client = Client()
    response = _sign_in(client, admin_user.username, PASSWORD)
    assert response.status_code == 302 and _signed_in(client)


def test_the_admin_sign_in_takes_superusers_only_too(local_login_off, user_factory, admin_user):
    staff = user_factory("staff-only")
    staff.is_staff = True
    staff.save()
    url = reverse("admin:login")

    refused = Client()
    assert _sign_in(refused, staff.username, PASSWORD, url=url).status_code == 200
    assert not _signed_in(refused)
    allowed = Client()
    assert _sign_in(allowed, admin_user.username, PASSWORD, url=url).status_code == 302
    assert _signed_in(allowed)


def test_password_sessions_of_other_users_end(settings, approver_client, admin_client_):
    assert approver_client.get("/approvals/").status_code == 200

    settings.LOCAL_LOGIN = False

    assert approver_client.get("/approvals/").status_code == 302  # to the sign-in page
    assert admin_client_.get("/status/").status_code == 200


def test_the_sign_in_page_says_so(settings):
    assert 'data-testid="local-login-off"' not in Client().get("/accounts/login/").content.decode()

    settings.LOCAL_LOGIN = False
    html = Client().get("/accounts/login/").content.decode()

    assert "Password sign-in is only for administrators' break-glass accounts" in html


def test_with_local_login_on_everyone_signs_in_with_a_password(approver):
    client = Client()
    assert _sign_in(client, approver.username, PASSWORD).status_code == 302
    assert _signed_in(client)
