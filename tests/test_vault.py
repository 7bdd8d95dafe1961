"""vault.py against the session's real OpenBao: references, KV v1/v2 reads, failures, AppRole."""

from __future__ import annotations

import json
import re
import string
import time
import uuid

import hvac
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from connections_app import devstack, vault
from tests.faults import FaultProxy

pytestmark = pytest.mark.usefixtures("servers")

KV1 = devstack.KV1_MOUNT

# The autouse server fixture is function-scoped but harmless to share between examples.
pure = hsettings(suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)


def _closed_url() -> str:
    return f"http://{devstack.HOST}:{devstack.free_port()}"


@pytest.fixture
def no_vault(settings):
    """Any Vault call fails with vault_unreachable: a refusal must come before one."""
    settings.VAULT_ADDR = _closed_url()
    vault.reset_client()


@pytest.fixture
def kv2_secret(bao_cli):
    """A fresh KV v2 secret with three versions, so tests may delete and destroy freely."""
    path = f"secret/vault-tests/{uuid.uuid4().hex[:10]}"
    values = [f"CANARY-v{n}-{uuid.uuid4().hex}" for n in (1, 2, 3)]
    for value in values:
        bao_cli("kv", "put", path, f"value={value}")
    return path, values


@pytest.fixture(scope="module")
def sealed_openbao():
    """A second OpenBao, really sealed; the session server stays unsealed for everyone else."""
    server = devstack.start_openbao()
    try:
        devstack.bao(server.url, server.extra["token"], "operator", "seal")
        assert hvac.Client(url=server.url).sys.is_sealed()
        yield server
    finally:
        server.stop()


def _assert_no_secret(obj, canaries, *extra: str) -> None:
    text = f"{obj!r} {obj!s}"
    for value in [*canaries.values(), *extra]:
        assert value not in text


# ---------------------------------------------------------------------------
# parse_reference


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("secret/app/partner#password", vault.Reference("secret/app/partner", "password")),
        ("secret/app/partner#password@3", vault.Reference("secret/app/partner", "password", 3)),
        (f"{KV1}/eventbridge/v1#api_key", vault.Reference(f"{KV1}/eventbridge/v1", "api_key")),
        ("  secret/a.b/c-d_e#k.e-y_1@01 ", vault.Reference("secret/a.b/c-d_e", "k.e-y_1", 1)),
        ("kv/team/x#k@9223372036854775807", vault.Reference("kv/team/x", "k", 2**63 - 1)),
        ("secretsys/x#k", vault.Reference("secretsys/x", "k")),
    ],
)  # fmt: skip
def test_parse_reference_good_forms(text, expected):
    ref = vault.parse_reference(text)
    assert ref == expected
    assert vault.parse_reference(str(ref)) == ref


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("", "invalid_reference"),
        ("   ", "invalid_reference"),
        ("/secret/app#key", "leading_slash"),
        ("/sys/policy/root#key", "leading_slash"),
        ("secret/app/partner", "missing_key"),
        ("secret/app/partner#", "missing_key"),
        ("secret/app/partner#@2", "missing_key"),
        ("secret/../sys/policy/root#key", "path_escape"),
        ("secret/app/..#key", "path_escape"),
        ("..#key", "path_escape"),
        ("secret/a..b#key", "path_escape"),
        ("secret/./app#key", "path_escape"),
        ("sys/policy/root#key", "forbidden_mount"),
        ("SYS/policy/root#key", "forbidden_mount"),
        ("auth/token/lookup-self#id", "forbidden_mount"),
        ("identity/entity/id#x", "forbidden_mount"),
        ("cubbyhole/mine#x", "forbidden_mount"),
        ("sys#key", "forbidden_mount"),
        ("secret/app#key@0", "bad_version"),
        ("secret/app#key@-1", "bad_version"),
        ("secret/app#key@latest", "bad_version"),
        ("secret/app#key@", "bad_version"),
        ("secret/app#key@1.5", "bad_version"),
        ("secret/app#key@1@2", "bad_version"),
        ("secret/app#key@99999999999999999999", "bad_version"),
        ("secret/app#key@\u0663", "bad_version"),  # an Arabic-Indic digit: int() would take it
        ("secret#key", "bad_format"),
        ("secret//app#key", "bad_format"),
        ("secret/app/#key", "bad_format"),
        ("secret/my app#key", "bad_format"),
        ("secret/app?version=1#key", "bad_format"),
        ("secret/%2e%2e/app#key", "bad_format"),
        ("secret/app#key#other", "bad_format"),
        ("secret/app#k/ey", "bad_format"),
        ("-secret/app#key", "bad_format"),
    ],
)
def test_parse_reference_refusals_have_stable_codes(no_vault, text, code):
    with pytest.raises(vault.InvalidReference) as caught:
        vault.check(vault.parse_reference(text))
    assert caught.value.code == code
    assert caught.value.message


_SEGMENT = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_\-]{0,8}(\.[A-Za-z0-9_\-]{1,4})?", fullmatch=True)
_KEY = st.from_regex(r"[A-Za-z0-9._\-]{1,12}", fullmatch=True)
_PLAIN = st.text(alphabet=string.ascii_letters + string.digits + "._-", max_size=6)


@pure
@given(
    mount=_SEGMENT.filter(lambda m: m.lower() not in ("sys", "auth", "identity", "cubbyhole")),
    rest=st.lists(_SEGMENT, min_size=1, max_size=4),
    key=_KEY,
    version=st.none() | st.integers(min_value=1, max_value=2**63 - 1),
)
def test_generated_good_references_round_trip(mount, rest, key, version):
    path = "/".join([mount, *rest])
    text = f"{path}#{key}" + (f"@{version}" if version is not None else "")
    ref = vault.parse_reference(text)
    assert ref == vault.Reference(path, key, version)
    assert str(ref) == text


@pure
@given(
    before=st.lists(_SEGMENT, max_size=3),
    escape=st.tuples(_PLAIN, _PLAIN).map(lambda t: f"{t[0]}..{t[1]}"),
    after=st.lists(_SEGMENT, max_size=3),
    key=_KEY,
)
def test_any_path_segment_containing_dotdot_is_refused(before, escape, after, key):
    text = "/".join([*before, escape, *after]) + f"#{key}"
    with pytest.raises(vault.InvalidReference) as caught:
        vault.parse_reference(text)
    assert caught.value.code == "path_escape"


@pure
@given(
    mount=st.sampled_from(["sys", "auth", "identity", "cubbyhole"]).flatmap(
        lambda m: st.sampled_from([m, m.upper(), m.capitalize()])
    ),
    rest=st.lists(_SEGMENT, max_size=3),
    key=_KEY,
)
def test_system_mounts_are_refused_whatever_follows(mount, rest, key):
    with pytest.raises(vault.InvalidReference) as caught:
        vault.parse_reference("/".join([mount, *rest]) + f"#{key}")
    assert caught.value.code == "forbidden_mount"


@pure
@given(
    version=st.text(max_size=8).filter(
        lambda v: not re.fullmatch(r"[0-9]+", v.strip()) or int(v.strip()) == 0
    )
)
def test_anything_but_a_positive_version_is_refused(version):
    with pytest.raises(vault.InvalidReference) as caught:
        vault.parse_reference(f"secret/app/partner#password@{version}")
    assert caught.value.code == "bad_version"


@pure
@given(text=st.text(max_size=40))
def test_arbitrary_text_parses_or_is_refused_cleanly(text):
    try:
        ref = vault.parse_reference(text)
    except vault.InvalidReference as exc:
        assert exc.code in {
            "invalid_reference", "leading_slash", "missing_key", "path_escape",
            "forbidden_mount", "bad_version", "bad_format",
        }  # fmt: skip
    else:
        assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._\-/]*", ref.path)
        assert ".." not in ref.path
        assert ref.path.split("/")[0].lower() not in ("sys", "auth", "identity", "cubbyhole")


# ---------------------------------------------------------------------------
# Reading and checking on KV v2 and KV v1


def test_kv2_latest_version(canaries):
    ref = vault.parse_reference("secret/canary/rotating#value")
    resolution = vault.read(ref)
    assert resolution.value == canaries["new"]
    info = resolution.info
    assert (info.mount, info.kv_version, info.version) == ("secret", 2, 2)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", info.updated)
    _assert_no_secret(resolution, canaries)


def test_kv2_specific_version_shows_its_version_and_time(canaries):
    old = vault.read(vault.parse_reference("secret/canary/rotating#value@1"))
    new = vault.read(vault.parse_reference("secret/canary/rotating#value@2"))
    assert old.value == canaries["old"]
    assert new.value == canaries["new"]
    assert (old.info.version, new.info.version) == (1, 2)
    assert old.info.updated and new.info.updated
    assert old.info.updated <= new.info.updated  # RFC 3339 in UTC sorts as text


def test_check_never_returns_or_shows_the_value(canaries):
    for text in (
        "secret/canary/basic#password",
        "secret/canary/oauth#client_secret",
        "secret/canary/rotating#value@1",
        f"{KV1}/canary/v1#api_key",
    ):
        info = vault.check(vault.parse_reference(text))
        assert isinstance(info, vault.SecretInfo)
        _assert_no_secret(info, canaries)
        assert not any(isinstance(v, str) and v in canaries.values() for v in vars(info).values())


def test_kv1_mount_has_no_versions(canaries):
    resolution = vault.read(vault.parse_reference(f"{KV1}/canary/v1#api_key"))
    assert resolution.value == canaries["v1_key"]
    info = resolution.info
    assert (info.mount, info.kv_version, info.version, info.updated) == (KV1, 1, None, None)


def test_version_on_kv1_is_refused(canaries):
    with pytest.raises(vault.InvalidReference) as caught:
        vault.check(vault.parse_reference(f"{KV1}/canary/v1#api_key@1"))
    assert caught.value.code == "no_versions"
    _assert_no_secret(caught.value, canaries)


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("secret/canary/no-such-secret#value", "not_found"),
        (f"{KV1}/canary/no-such-secret#api_key", "not_found"),
        ("secret/canary/basic#no_such_key", "key_missing"),
        (f"{KV1}/canary/v1#no_such_key", "key_missing"),
        ("secret/canary/rotating#value@99", "version_not_found"),
    ],
)
def test_read_failures_have_their_own_code(canaries, text, code):
    with pytest.raises(vault.VaultError) as caught:
        vault.check(vault.parse_reference(text))
    assert caught.value.code == code
    _assert_no_secret(caught.value, canaries)


def test_deleted_version(kv2_secret, bao_cli):
    path, values = kv2_secret
    bao_cli("kv", "delete", "-versions=1", path)
    with pytest.raises(vault.SecretNotFound) as caught:
        vault.check(vault.parse_reference(f"{path}#value@1"))
    assert caught.value.code == "version_deleted"
    assert vault.read(vault.parse_reference(f"{path}#value@2")).value == values[1]
    assert vault.check(vault.parse_reference(f"{path}#value")).version == 3


def test_deleted_latest_version(kv2_secret, bao_cli):
    path, values = kv2_secret
    bao_cli("kv", "delete", path)
    with pytest.raises(vault.SecretNotFound) as caught:
        vault.check(vault.parse_reference(f"{path}#value"))
    assert caught.value.code == "version_deleted"
    _assert_no_secret(caught.value, {}, *values)


def test_destroyed_version(kv2_secret, bao_cli):
    path, values = kv2_secret
    bao_cli("kv", "destroy", "-versions=2", path)
    with pytest.raises(vault.SecretNotFound) as caught:
        vault.check(vault.parse_reference(f"{path}#value@2"))
    assert caught.value.code == "version_destroyed"
    _assert_no_secret(caught.value, {}, *values)
    assert vault.read(vault.parse_reference(f"{path}#value@1")).value == values[0]


def test_live_version_with_scheduled_deletion_is_readable(bao_cli):
    """delete_version_after gives live versions a future deletion_time: still readable."""
    path = f"secret/vault-tests/{uuid.uuid4().hex[:10]}"
    bao_cli("kv", "metadata", "put", "-delete-version-after=1h", path)
    bao_cli("kv", "put", path, "value=scheduled")
    info = vault.check(vault.parse_reference(f"{path}#value"))
    assert info.version == 1


# ---------------------------------------------------------------------------
# Permission, seal and reachability


@pytest.fixture
def limited_token(bao_cli):
    """A real token whose only policy grants a different path of the same KV mount."""
    name = f"only-other-{uuid.uuid4().hex[:8]}"
    bao_cli(
        "policy", "write", name, "-",
        input_text=f'path "secret/data/other-{name}/*" {{ capabilities = ["read"] }}',
    )  # fmt: skip
    created = json.loads(bao_cli("token", "create", f"-policy={name}", "-format=json"))
    yield created["auth"]["client_token"]
    bao_cli("token", "revoke", created["auth"]["client_token"])
    bao_cli("policy", "delete", name)


def test_permission_denied_by_policy(settings, canaries, limited_token):
    settings.VAULT_TOKEN = limited_token
    vault.reset_client()
    with pytest.raises(vault.VaultPermissionDenied) as caught:
        vault.check(vault.parse_reference("secret/canary/basic#password"))
    assert caught.value.code == "permission_denied"
    _assert_no_secret(caught.value, canaries, limited_token)


def test_mount_the_token_may_not_see(settings, canaries, limited_token):
    settings.VAULT_TOKEN = limited_token
    vault.reset_client()
    with pytest.raises(vault.VaultPermissionDenied) as caught:
        vault.check(vault.parse_reference(f"{KV1}/canary/v1#api_key"))
    assert caught.value.code == "mount_not_found"
    _assert_no_secret(caught.value, canaries, limited_token)


def test_unknown_token_is_permission_denied(settings, canaries):
    settings.VAULT_TOKEN = f"hvs.not-a-token-{uuid.uuid4().hex}"
    vault.reset_client()
    with pytest.raises(vault.VaultPermissionDenied) as caught:
        vault.check(vault.parse_reference("secret/canary/basic#password"))
    assert settings.VAULT_TOKEN not in caught.value.message
    assert vault.health() == {"reachable": True, "sealed": False, "authenticated": False}


def test_sealed_vault(settings, canaries, sealed_openbao):
    settings.VAULT_ADDR = sealed_openbao.url
    settings.VAULT_TOKEN = sealed_openbao.extra["token"]
    vault.reset_client()
    with pytest.raises(vault.VaultSealed) as caught:
        vault.check(vault.parse_reference("secret/canary/basic#password"))
    assert caught.value.code == "vault_sealed"
    _assert_no_secret(caught.value, canaries, settings.VAULT_TOKEN)
    assert vault.health() == {"reachable": True, "sealed": True, "authenticated": False}


def test_unreachable_vault(settings, canaries):
    settings.VAULT_ADDR = _closed_url()
    vault.reset_client()
    with pytest.raises(vault.VaultUnavailable) as caught:
        vault.check(vault.parse_reference("secret/canary/basic#password"))
    assert caught.value.code == "vault_unreachable"
    assert settings.VAULT_ADDR in caught.value.message
    _assert_no_secret(caught.value, canaries, settings.VAULT_TOKEN)
    assert vault.health() == {"reachable": False, "sealed": None, "authenticated": False}


def test_missing_ca_certificate_is_reported_not_crashed(settings):
    settings.VAULT_ADDR = "https://127.0.0.1:1"
    settings.VAULT_CACERT = "/nonexistent/vault-ca.pem"
    vault.reset_client()
    with pytest.raises(vault.VaultError) as caught:
        vault.check(vault.parse_reference("secret/canary/basic#password"))
    assert caught.value.code == "cacert_missing"
    assert vault.health()["reachable"] is False


def test_health_with_the_dev_stack_up(settings):
    assert vault.health() == {"reachable": True, "sealed": False, "authenticated": True}
    assert vault.auth_method() == "token"


# ---------------------------------------------------------------------------
# AppRole


@pytest.fixture
def approle(approle_login):
    """make(ttl): a real AppRole reading the canaries, the app logged in with it."""
    return lambda ttl="1h": approle_login(ttl=ttl)


def _token_valid(openbao, token: str) -> bool:
    try:
        hvac.Client(url=openbao.url, token=token).auth.token.lookup_self()
    except hvac.exceptions.Forbidden:
        return False
    return True


def test_approle_login_reads_a_secret(approle, canaries, openbao):
    approle()
    assert vault.auth_method() == "approle"
    resolution = vault.read(vault.parse_reference("secret/canary/basic#password"))
    assert resolution.value == canaries["password"]
    token = vault._client.get().token
    assert token and token != openbao.extra["token"]
    assert vault.health()["authenticated"] is True


def test_approle_policy_still_limits_reads(approle, canaries):
    approle()
    with pytest.raises(vault.VaultPermissionDenied):
        vault.check(vault.parse_reference(f"{KV1}/canary/v1#api_key"))


def test_approle_wrong_secret_id_is_refused(approle, settings, canaries):
    approle()
    settings.VAULT_SECRET_ID = str(uuid.uuid4())
    vault.reset_client()
    with pytest.raises(vault.VaultPermissionDenied) as caught:
        vault.check(vault.parse_reference("secret/canary/basic#password"))
    assert caught.value.code == "login_denied"
    assert settings.VAULT_SECRET_ID not in caught.value.message
    assert vault.health()["authenticated"] is False


def test_approle_logs_in_again_after_its_token_is_revoked(approle, canaries, bao_cli, openbao):
    approle("1h")
    vault.check(vault.parse_reference("secret/canary/basic#password"))
    first = vault._client.get().token
    bao_cli("token", "revoke", first)
    assert not _token_valid(openbao, first)

    resolution = vault.read(vault.parse_reference("secret/canary/oauth#client_secret"))

    assert resolution.value == canaries["client_secret"]
    second = vault._client.get().token
    assert second != first
    assert _token_valid(openbao, second)


def test_approle_logs_in_again_after_its_token_expires(approle, canaries, openbao):
    approle("2s")
    vault.check(vault.parse_reference("secret/canary/basic#password"))
    first = vault._client.get().token
    time.sleep(2.3)
    assert not _token_valid(openbao, first)

    resolution = vault.read(vault.parse_reference("secret/canary/apikey#api_key"))

    assert resolution.value == canaries["api_key"]
    assert vault._client.get().token != first


def test_approle_with_vault_unreachable(approle, settings):
    approle()
    settings.VAULT_ADDR = _closed_url()
    vault.reset_client()
    with pytest.raises(vault.VaultUnavailable) as caught:
        vault.check(vault.parse_reference("secret/canary/basic#password"))
    assert caught.value.code == "vault_unreachable"


def test_approle_with_vault_sealed(approle, settings, sealed_openbao):
    approle()
    settings.VAULT_ADDR = sealed_openbao.url
    vault.reset_client()
    with pytest.raises(vault.VaultSealed):
        vault.check(vault.parse_reference("secret/canary/basic#password"))


def test_read_all_reads_each_secret_version_once(openbao, settings, canaries):
    refs = [
        vault.parse_reference(text)
        for text in (
            "secret/canary/oauth#client_secret",
            "secret/canary/oauth#header_token",
            "secret/canary/rotating#value@1",
            "secret/canary/rotating#value",
            "secret/canary/basic#password",
        )
    ]
    with FaultProxy(openbao.url) as proxy:
        settings.VAULT_ADDR = proxy.url
        vault.reset_client()
        vault.read(refs[0])  # learn the mount first, so only data reads are counted below
        proxy.seen.clear()
        read = vault.read_all(refs + refs[:1])
    values = [read[ref].value for ref in refs]
    assert values == [
        canaries["client_secret"],
        canaries["header_token"],
        canaries["old"],
        canaries["new"],
        canaries["password"],
    ]
    assert [read[ref].info.version for ref in refs] == [1, 1, 1, 2, 1]
    paths = sorted(path for _, path, _ in proxy.seen)
    assert paths == [
        "/v1/secret/data/canary/basic",
        "/v1/secret/data/canary/oauth",
        "/v1/secret/data/canary/rotating",
        "/v1/secret/data/canary/rotating?version=1",
    ]


def test_read_all_names_the_missing_key(canaries):
    refs = [vault.parse_reference("secret/canary/oauth#client_secret"),
            vault.parse_reference("secret/canary/oauth#nope")]  # fmt: skip
    with pytest.raises(vault.SecretNotFound) as info:
        vault.read_all(refs)
    assert info.value.code == "key_missing"
    assert "nope" in info.value.message
