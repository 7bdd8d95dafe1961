"""/healthz (anonymous, for load balancers) and the admin-only /status/ page, on real servers."""

from __future__ import annotations

import re
import time

import hvac
import pytest

from connections_app import devstack, eventbridge, vault

pytestmark = pytest.mark.usefixtures("servers")


def _closed_url() -> str:
    return f"http://{devstack.HOST}:{devstack.free_port()}"


def _unseal_key(server) -> str:
    """The dev server prints its unseal key a moment after it starts answering."""
    for _ in range(100):
        found = re.search(r"Unseal Key: (\S+)", server.log_path.read_text(errors="replace"))
        if found:
            return found.group(1)
        time.sleep(0.05)
    raise AssertionError("the OpenBao dev server printed no unseal key")


@pytest.fixture(scope="module")
def sealed_openbao():
    """A second OpenBao, really sealed; the session server stays unsealed for everyone else."""
    server = devstack.start_openbao()
    try:
        server.extra["unseal_key"] = server.extra["unseal_key"] or _unseal_key(server)
        devstack.bao(server.url, server.extra["token"], "operator", "seal")
        assert hvac.Client(url=server.url).sys.is_sealed()
        yield server
    finally:
        server.stop()


@pytest.fixture
def aws_down(monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", _closed_url())
    eventbridge.reset_clients()


def _get_healthz(client, settings, canaries, status: int) -> dict:
    response = client.get("/healthz")
    assert response.status_code == status
    assert response["Content-Type"] == "application/json"
    text = response.content.decode()
    assert settings.VAULT_TOKEN not in text
    for value in canaries.values():
        assert value not in text
    return response.json()


@pytest.mark.django_db
def test_healthz_ok_with_the_dev_stack_up(client, settings, canaries):
    body = _get_healthz(client, settings, canaries, 200)
    assert body["status"] == "ok"
    assert body["database"] == {"ok": True}
    assert body["vault"] == {"reachable": True, "sealed": False, "authenticated": True, "ok": True}
    assert body["aws"]["ok"] is True
    assert body["aws"]["reachable"] is True


@pytest.mark.django_db
def test_healthz_only_answers_get(client):
    assert client.post("/healthz").status_code == 405


@pytest.mark.django_db
def test_healthz_503_when_openbao_is_stopped(client, settings, canaries):
    settings.VAULT_ADDR = _closed_url()
    vault.reset_client()
    body = _get_healthz(client, settings, canaries, 503)
    assert body["status"] == "fail"
    assert body["vault"]["ok"] is False
    assert body["vault"]["reachable"] is False
    assert body["database"]["ok"] is True
    assert body["aws"]["ok"] is True


@pytest.mark.django_db
def test_healthz_503_not_500_when_the_vault_ca_file_is_missing(client, settings, canaries):
    settings.VAULT_ADDR = "https://127.0.0.1:1"
    settings.VAULT_CACERT = "/nonexistent/vault-ca.pem"
    vault.reset_client()
    body = _get_healthz(client, settings, canaries, 503)
    assert body["vault"]["ok"] is False


@pytest.mark.django_db
def test_healthz_503_when_openbao_is_sealed(client, settings, canaries, sealed_openbao):
    settings.VAULT_ADDR = sealed_openbao.url
    settings.VAULT_TOKEN = sealed_openbao.extra["token"]
    vault.reset_client()
    body = _get_healthz(client, settings, canaries, 503)
    assert body["status"] == "fail"
    assert body["vault"] == {"reachable": True, "sealed": True, "authenticated": False, "ok": False}
    assert sealed_openbao.extra["unseal_key"] not in str(body)


@pytest.mark.django_db
def test_healthz_503_when_the_token_is_refused(client, settings, canaries):
    settings.VAULT_TOKEN = "hvs.not-a-real-token"
    vault.reset_client()
    body = _get_healthz(client, settings, canaries, 503)
    assert body["vault"] == {
        "reachable": True,
        "sealed": False,
        "authenticated": False,
        "ok": False,
    }


@pytest.mark.django_db
def test_healthz_503_when_the_aws_endpoint_is_down(client, settings, canaries, aws_down):
    body = _get_healthz(client, settings, canaries, 503)
    assert body["status"] == "fail"
    assert body["aws"]["ok"] is False
    assert body["aws"]["reachable"] is False
    assert body["vault"]["ok"] is True


# ---------------------------------------------------------------------------
# /status/


@pytest.mark.django_db
def test_status_page_for_a_superuser(admin_client_, settings, canaries):
    response = admin_client_.get("/status/")
    assert response.status_code == 200
    page = response.content.decode()
    assert "all fine" in page
    assert settings.VAULT_ADDR in page
    assert "Vault auth method" in page
    assert "<dd>token</dd>" in page
    assert "<dd>us-east-1</dd>" in page
    assert settings.VAULT_TOKEN not in page
    for value in canaries.values():
        assert value not in page


@pytest.mark.django_db
def test_status_page_still_renders_when_everything_is_down(admin_client_, settings, aws_down):
    settings.VAULT_ADDR = _closed_url()
    vault.reset_client()
    response = admin_client_.get("/status/")
    assert response.status_code == 200
    page = response.content.decode()
    assert "something is down" in page
    assert settings.VAULT_ADDR in page


@pytest.mark.django_db
def test_status_page_names_approle_without_its_credentials(admin_client_, settings):
    settings.VAULT_ROLE_ID = "role-id-for-status-test"
    settings.VAULT_SECRET_ID = "secret-id-for-status-test"
    vault.reset_client()
    response = admin_client_.get("/status/")
    assert response.status_code == 200
    page = response.content.decode()
    assert "<dd>approle</dd>" in page
    assert "role-id-for-status-test" not in page
    assert "secret-id-for-status-test" not in page


@pytest.mark.django_db
@pytest.mark.parametrize("who", ["requester_client", "approver_client", "auditor_client"])
def test_status_page_is_forbidden_to_non_superusers(request, who):
    response = request.getfixturevalue(who).get("/status/")
    assert response.status_code == 403


@pytest.mark.django_db
def test_status_page_sends_anonymous_users_to_login(client):
    response = client.get("/status/")
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")


# ---------------------------------------------------------------------------
# The cached answer


@pytest.mark.django_db
def test_healthz_answers_from_the_cache_within_its_window(client, settings, monkeypatch):
    from connections_app import health

    probes = []
    real = health.probe
    monkeypatch.setattr(health, "probe", lambda: probes.append(1) or real())
    settings.HEALTH_CACHE_SECONDS = 0.5

    first = client.get("/healthz").json()
    settings.VAULT_ADDR = _closed_url()  # Vault gone: not seen until the answer is stale
    vault.reset_client()
    assert client.get("/healthz").json() == first and len(probes) == 1
    time.sleep(0.6)
    response = client.get("/healthz")
    assert response.status_code == 503 and len(probes) == 2


@pytest.mark.django_db
def test_status_page_probes_afresh(admin_client_, client, settings):
    settings.HEALTH_CACHE_SECONDS = 60
    assert client.get("/healthz").status_code == 200
    settings.VAULT_ADDR = _closed_url()
    vault.reset_client()
    assert "something is down" in admin_client_.get("/status/").content.decode()
    assert client.get("/healthz").status_code == 200  # the anonymous probe's answer is cached
