"""The extended moto server (tests/moto_ext.py), driven only with plain boto3 clients over HTTP.

Independent of the app: one server for the module, started with devstack.start_moto(script=...),
reset before each test through its control endpoint.
"""

from __future__ import annotations

import json
import statistics
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import boto3
import pytest
from botocore.config import Config

from connections_app import devstack

SCRIPT = str(Path(__file__).with_name("moto_ext.py"))
ACCOUNT = "123456789012"
OTHER_ACCOUNT = "210987654321"
REGION = "us-east-1"


@pytest.fixture(scope="module")
def ext():
    server = devstack.start_moto(script=SCRIPT)
    yield server
    server.stop()


def _call(url: str, path: str, body: dict | None = None, method: str = "POST"):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        url + path, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # loopback only
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.fixture
def control(ext):
    """POST to the control endpoint; answers the JSON (asserting 200 unless `status` says)."""

    def call(path: str, body: dict | None = None, *, method: str = "POST", status: int = 200):
        got, answer = _call(ext.url, path, body if method == "POST" else None, method)
        assert got == status, answer
        return answer

    call("/moto-ext/reset", {})
    yield call
    call("/moto-ext/reset", {})


def _client(url, service, **credentials):
    credentials = credentials or {"aws_access_key_id": "testing", "aws_secret_access_key": "x"}
    return boto3.client(
        service,
        endpoint_url=url,
        region_name=REGION,
        config=Config(retries={"max_attempts": 1}),
        **credentials,
    )


@pytest.fixture
def events(ext, control):
    return _client(ext.url, "events")


@pytest.fixture
def secrets(ext):
    return _client(ext.url, "secretsmanager")


def _code(excinfo) -> str:
    return excinfo.value.response["Error"]["Code"]


def _name(prefix="c"):
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


CANARY = {k: f"CANARY{uuid.uuid4().hex}" for k in ("pw", "cs", "key", "hdr", "qs", "body", "oh")}


def _auth(kind: str, *, secret: str | None = None) -> dict:
    invocation = {
        "HeaderParameters": [
            {"Key": "X-Token", "Value": CANARY["hdr"], "IsValueSecret": True},
            {"Key": "X-Plain", "Value": "plain-header", "IsValueSecret": False},
        ],
        "QueryStringParameters": [{"Key": "sig", "Value": CANARY["qs"], "IsValueSecret": True}],
        "BodyParameters": [{"Key": "tenant", "Value": "plain-body", "IsValueSecret": False}],
    }
    if kind == "BASIC":
        block = {"BasicAuthParameters": {"Username": "alice", "Password": secret or CANARY["pw"]}}
    elif kind == "OAUTH_CLIENT_CREDENTIALS":
        block = {
            "OAuthParameters": {
                "ClientParameters": {
                    "ClientID": "client-1",
                    "ClientSecret": secret or CANARY["cs"],
                },
                "AuthorizationEndpoint": "https://auth.example.com/oauth2/token",
                "HttpMethod": "POST",
                "OAuthHttpParameters": {
                    "BodyParameters": [
                        {"Key": "audience", "Value": CANARY["oh"], "IsValueSecret": True},
                        {
                            "Key": "grant_type",
                            "Value": "client_credentials",
                            "IsValueSecret": False,
                        },
                    ]
                },
            }
        }
    else:
        block = {
            "ApiKeyAuthParameters": {
                "ApiKeyName": "x-api-key",
                "ApiKeyValue": secret or CANARY["key"],
            }
        }
    return {**block, "InvocationHttpParameters": invocation}


def _create(events, name=None, kind="API_KEY", **extra):
    name = name or _name()
    answer = events.create_connection(
        Name=name, AuthorizationType=kind, AuthParameters=_auth(kind), **extra
    )
    return name, answer


def _secret(secrets, arn) -> dict:
    return json.loads(secrets.get_secret_value(SecretId=arn)["SecretString"])


def _clean(answer: dict) -> dict:
    return {k: v for k, v in answer.items() if k != "ResponseMetadata"}


# ---------------------------------------------------------------------------
# States and times


@pytest.mark.parametrize(
    ("kind", "first"),
    [("API_KEY", "CREATING"), ("BASIC", "CREATING"), ("OAUTH_CLIENT_CREDENTIALS", "AUTHORIZING")],
)
def test_create_answers_a_transitional_state_then_settles_authorized(events, kind, first):
    name, created = _create(events, kind=kind, Description="partner")

    assert set(_clean(created)) == {
        "ConnectionArn",
        "ConnectionState",
        "CreationTime",
        "LastModifiedTime",
    }
    assert created["ConnectionState"] == first
    assert created["ConnectionArn"].startswith(f"arn:aws:events:{REGION}:{ACCOUNT}:connection/")
    described = events.describe_connection(Name=name)
    assert described["ConnectionState"] == "AUTHORIZED"
    assert described["Name"] == name and described["Description"] == "partner"
    assert described["AuthorizationType"] == kind
    assert described["CreationTime"] == created["CreationTime"]
    assert described["LastModifiedTime"] == created["CreationTime"]
    assert described["LastAuthorizedTime"] == created["CreationTime"]
    assert "StateReason" not in described


def test_a_settle_delay_holds_the_transitional_state(events, control):
    assert control("/moto-ext/config", {"settle_seconds": 1.0}) == {"settle_seconds": 1.0}
    name, created = _create(events)

    assert events.describe_connection(Name=name)["ConnectionState"] == "CREATING"
    listed = events.list_connections(NamePrefix=name)["Connections"]
    assert [c["ConnectionState"] for c in listed] == ["CREATING"]
    assert "LastAuthorizedTime" not in listed[0]
    time.sleep(1.1)
    described = events.describe_connection(Name=name)
    assert described["ConnectionState"] == "AUTHORIZED"
    elapsed = (described["LastAuthorizedTime"] - created["CreationTime"]).total_seconds()
    assert elapsed == pytest.approx(1.0, abs=0.01)
    assert control("/moto-ext/config", method="GET") == {"settle_seconds": 1.0}
    assert control("/moto-ext/reset", {})["settle_seconds"] == 0.0


# ---------------------------------------------------------------------------
# Secret values


@pytest.mark.parametrize("kind", ["API_KEY", "BASIC", "OAUTH_CLIENT_CREDENTIALS"])
def test_describe_and_list_never_echo_secret_values(ext, events, secrets, kind):
    name, _ = _create(events, kind=kind)

    described = events.describe_connection(Name=name)
    listed = events.list_connections(NamePrefix=name)
    shown = json.dumps([_clean(described), _clean(listed)], default=str)
    for value in CANARY.values():
        assert value not in shown
    auth = described["AuthParameters"]
    invocation = auth["InvocationHttpParameters"]
    assert invocation["HeaderParameters"] == [
        {"Key": "X-Token", "IsValueSecret": True},
        {"Key": "X-Plain", "Value": "plain-header", "IsValueSecret": False},
    ]
    assert invocation["QueryStringParameters"] == [{"Key": "sig", "IsValueSecret": True}]
    assert invocation["BodyParameters"][0]["Value"] == "plain-body"
    if kind == "BASIC":
        assert auth["BasicAuthParameters"] == {"Username": "alice"}
    elif kind == "API_KEY":
        assert auth["ApiKeyAuthParameters"] == {"ApiKeyName": "x-api-key"}
    else:
        oauth = auth["OAuthParameters"]
        assert oauth["ClientParameters"] == {"ClientID": "client-1"}
        assert oauth["AuthorizationEndpoint"] == "https://auth.example.com/oauth2/token"
        assert oauth["OAuthHttpParameters"]["BodyParameters"] == [
            {"Key": "audience", "IsValueSecret": True},
            {"Key": "grant_type", "Value": "client_credentials", "IsValueSecret": False},
        ]
    assert described["SecretArn"].startswith(f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:")
    # The values did reach the connection's secret, which is where AWS keeps them.
    stored = json.dumps(_secret(secrets, described["SecretArn"]))
    main = {"BASIC": "pw", "API_KEY": "key", "OAUTH_CLIENT_CREDENTIALS": "cs"}[kind]
    assert CANARY[main] in stored and CANARY["hdr"] in stored and CANARY["qs"] in stored
    # moto's own model dump shows the scrubbed view only.
    with urllib.request.urlopen(ext.url + "/moto-api/data.json", timeout=30) as response:
        dumped = json.dumps(json.loads(response.read())["events"])
    assert name in dumped
    for value in CANARY.values():
        assert value not in dumped


def test_secret_holds_aws_keys(events, secrets):
    name, _ = _create(events, kind="BASIC")
    stored = _secret(secrets, events.describe_connection(Name=name)["SecretArn"])
    assert stored["username"] == "alice" and stored["password"] == CANARY["pw"]
    assert stored["invocation_http_parameters"]["header_parameters"][0] == {
        "key": "X-Token",
        "value": CANARY["hdr"],
        "is_value_secret": True,
    }


# ---------------------------------------------------------------------------
# UpdateConnection


def test_update_stores_the_new_secret_value_and_moves_times(events, secrets):
    name, created = _create(events, Description="before")
    before = events.describe_connection(Name=name)
    time.sleep(0.01)

    updated = events.update_connection(
        Name=name,
        Description="after",
        AuthParameters={"ApiKeyAuthParameters": {"ApiKeyValue": "rotated-value"}},
    )

    assert set(_clean(updated)) == {
        "ConnectionArn",
        "ConnectionState",
        "CreationTime",
        "LastModifiedTime",
        "LastAuthorizedTime",
    }
    assert updated["ConnectionState"] == "UPDATING"
    assert updated["LastModifiedTime"] > before["LastModifiedTime"]
    described = events.describe_connection(Name=name)
    assert described["ConnectionState"] == "AUTHORIZED"
    assert described["Description"] == "after"
    assert described["LastModifiedTime"] == updated["LastModifiedTime"]
    assert described["LastAuthorizedTime"] == updated["LastModifiedTime"]
    assert described["CreationTime"] == created["CreationTime"]
    # Members not given are kept: the key name and the invocation parameters.
    assert described["AuthParameters"]["ApiKeyAuthParameters"] == {"ApiKeyName": "x-api-key"}
    stored = _secret(secrets, described["SecretArn"])
    assert stored["api_key_value"] == "rotated-value"
    assert stored["api_key_name"] == "x-api-key"
    assert CANARY["key"] not in json.dumps(stored)
    assert stored["invocation_http_parameters"]["header_parameters"][0]["value"] == CANARY["hdr"]
    versions = secrets.list_secret_version_ids(SecretId=described["SecretArn"])["Versions"]
    assert len(versions) == 2


def test_update_rotates_an_oauth_client_secret_alone(events, secrets):
    name, _ = _create(events, kind="OAUTH_CLIENT_CREDENTIALS")
    events.update_connection(
        Name=name,
        AuthParameters={"OAuthParameters": {"ClientParameters": {"ClientSecret": "rotated"}}},
    )
    described = events.describe_connection(Name=name)
    assert described["ConnectionState"] == "AUTHORIZED"
    oauth = described["AuthParameters"]["OAuthParameters"]
    assert oauth["ClientParameters"] == {"ClientID": "client-1"}
    assert oauth["HttpMethod"] == "POST"
    stored = _secret(secrets, described["SecretArn"])
    assert stored["client_id"] == "client-1" and stored["client_secret"] == "rotated"
    assert stored["authorization_endpoint"] == "https://auth.example.com/oauth2/token"
    assert CANARY["oh"] in json.dumps(stored["oauth_http_parameters"])


def test_update_replaces_a_given_parameter_list_whole(events, secrets):
    name, _ = _create(events)
    events.update_connection(
        Name=name,
        AuthParameters={
            "InvocationHttpParameters": {
                "HeaderParameters": [{"Key": "X-New", "Value": "new-secret", "IsValueSecret": True}]
            }
        },
    )
    described = events.describe_connection(Name=name)
    invocation = described["AuthParameters"]["InvocationHttpParameters"]
    assert invocation["HeaderParameters"] == [{"Key": "X-New", "IsValueSecret": True}]
    assert invocation["QueryStringParameters"] == [{"Key": "sig", "IsValueSecret": True}]
    stored = _secret(secrets, described["SecretArn"])
    headers = stored["invocation_http_parameters"]["header_parameters"]
    assert headers == [{"key": "X-New", "value": "new-secret", "is_value_secret": True}]
    assert stored["api_key_value"] == CANARY["key"]


def test_update_may_change_the_authorization_type(events, secrets):
    name, _ = _create(events, kind="API_KEY")
    events.update_connection(
        Name=name,
        AuthorizationType="BASIC",
        AuthParameters={"BasicAuthParameters": {"Username": "bob", "Password": "bob-secret"}},
    )
    described = events.describe_connection(Name=name)
    assert described["AuthorizationType"] == "BASIC"
    assert described["ConnectionState"] == "AUTHORIZED"
    assert described["AuthParameters"]["BasicAuthParameters"] == {"Username": "bob"}
    assert "ApiKeyAuthParameters" not in described["AuthParameters"]
    stored = _secret(secrets, described["SecretArn"])
    assert stored["username"] == "bob" and stored["password"] == "bob-secret"
    assert "api_key_value" not in stored


def test_update_with_another_types_parameters_has_no_effect(events, secrets):
    name, _ = _create(events, kind="API_KEY")
    before = events.describe_connection(Name=name)
    events.update_connection(
        Name=name, AuthParameters={"BasicAuthParameters": {"Username": "u", "Password": "p"}}
    )
    after = events.describe_connection(Name=name)
    assert after["AuthorizationType"] == "API_KEY"
    assert after["AuthParameters"] == before["AuthParameters"]
    assert after["LastAuthorizedTime"] == before["LastAuthorizedTime"]
    assert "password" not in _secret(secrets, after["SecretArn"])


def test_update_of_the_description_alone_does_not_reauthorize(events, secrets):
    name, _ = _create(events)
    before = events.describe_connection(Name=name)
    time.sleep(0.01)
    events.update_connection(Name=name, Description="new words")
    after = events.describe_connection(Name=name)
    assert after["Description"] == "new words"
    assert after["LastModifiedTime"] > before["LastModifiedTime"]
    assert after["LastAuthorizedTime"] == before["LastAuthorizedTime"]
    versions = secrets.list_secret_version_ids(SecretId=after["SecretArn"])["Versions"]
    assert len(versions) == 1


# ---------------------------------------------------------------------------
# DeauthorizeConnection


def test_deauthorize_clears_the_credentials_and_an_update_authorizes_again(events, secrets):
    name, _ = _create(events)
    authorized = events.describe_connection(Name=name)

    answer = events.deauthorize_connection(Name=name)

    assert answer["ConnectionState"] == "DEAUTHORIZING"
    assert answer["LastAuthorizedTime"] == authorized["LastAuthorizedTime"]
    assert answer["LastModifiedTime"] >= authorized["LastModifiedTime"]
    described = events.describe_connection(Name=name)
    assert described["ConnectionState"] == "DEAUTHORIZED"
    assert "ApiKeyAuthParameters" not in described["AuthParameters"]
    assert described["AuthParameters"]["InvocationHttpParameters"]["HeaderParameters"] == [
        {"Key": "X-Plain", "Value": "plain-header", "IsValueSecret": False}
    ]
    stored = json.dumps(_secret(secrets, described["SecretArn"]))
    for value in CANARY.values():
        assert value not in stored
    assert "plain-header" in stored

    time.sleep(0.01)
    again = events.update_connection(
        Name=name,
        AuthParameters={"ApiKeyAuthParameters": {"ApiKeyName": "x-api-key", "ApiKeyValue": "v2"}},
    )
    assert again["ConnectionState"] == "UPDATING"
    described = events.describe_connection(Name=name)
    assert described["ConnectionState"] == "AUTHORIZED"
    assert described["LastAuthorizedTime"] > authorized["LastAuthorizedTime"]
    assert _secret(secrets, described["SecretArn"])["api_key_value"] == "v2"


def test_a_deauthorized_connection_updated_without_credentials_stays_deauthorized(events):
    name, _ = _create(events)
    events.deauthorize_connection(Name=name)
    events.update_connection(Name=name, Description="still no key")
    assert events.describe_connection(Name=name)["ConnectionState"] == "DEAUTHORIZED"
    events.update_connection(
        Name=name, AuthParameters={"ApiKeyAuthParameters": {"ApiKeyName": "x-api-key"}}
    )
    described = events.describe_connection(Name=name)
    assert described["ConnectionState"] == "DEAUTHORIZED"
    assert "ApiKeyAuthParameters.ApiKeyValue" in described["StateReason"]


# ---------------------------------------------------------------------------
# DeleteConnection


def test_delete_goes_through_deleting(events, secrets, control):
    control("/moto-ext/config", {"settle_seconds": 1.0})
    name, _ = _create(events)
    time.sleep(1.05)
    arn = events.describe_connection(Name=name)["SecretArn"]

    answer = events.delete_connection(Name=name)

    assert answer["ConnectionState"] == "DELETING"
    assert {"CreationTime", "LastModifiedTime", "LastAuthorizedTime"} <= set(answer)
    assert events.describe_connection(Name=name)["ConnectionState"] == "DELETING"
    deleting = events.list_connections(ConnectionState="DELETING")["Connections"]
    assert [c["Name"] for c in deleting] == [name]
    with pytest.raises(events.exceptions.ConcurrentModificationException):
        events.update_connection(Name=name, Description="too late")
    time.sleep(1.05)
    with pytest.raises(events.exceptions.ResourceNotFoundException):
        events.describe_connection(Name=name)
    assert events.list_connections(NamePrefix=name)["Connections"] == []
    with pytest.raises(secrets.exceptions.ResourceNotFoundException):
        secrets.get_secret_value(SecretId=arn)
    # The name is free again.
    _create(events, name=name)


def test_delete_without_delay_is_gone_on_the_next_read(events):
    name, _ = _create(events)
    assert events.delete_connection(Name=name)["ConnectionState"] == "DELETING"
    with pytest.raises(events.exceptions.ResourceNotFoundException) as excinfo:
        events.describe_connection(Name=name)
    assert excinfo.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400


# ---------------------------------------------------------------------------
# Conflicts and refusals


@pytest.mark.parametrize(
    "state", ["CREATING", "UPDATING", "AUTHORIZING", "DEAUTHORIZING", "DELETING"]
)
def test_transitional_states_refuse_changes(events, control, state):
    name, _ = _create(events)
    forced = control(
        "/moto-ext/connection/state",
        {"name": name, "state": state, "hold": True, "clear_credentials": False},
    )
    assert forced["ConnectionState"] == state

    for call in (
        lambda: events.update_connection(Name=name, Description="x"),
        lambda: events.deauthorize_connection(Name=name),
        lambda: events.delete_connection(Name=name),
    ):
        with pytest.raises(events.exceptions.ConcurrentModificationException) as excinfo:
            call()
        assert excinfo.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert events.describe_connection(Name=name)["ConnectionState"] == state

    control("/moto-ext/connection/state", {"name": name, "state": "AUTHORIZED"})
    events.update_connection(Name=name, Description="fine now")


def test_unknown_names_duplicates_and_invalid_names(events):
    for call in (
        events.describe_connection,
        events.update_connection,
        events.deauthorize_connection,
        events.delete_connection,
    ):
        with pytest.raises(events.exceptions.ResourceNotFoundException):
            call(Name="no-such-connection")
    name, _ = _create(events)
    with pytest.raises(events.exceptions.ResourceAlreadyExistsException):
        _create(events, name=name)
    for bad in ("has space", "semi;colon", "slash/name"):
        with pytest.raises(events.exceptions.ClientError) as excinfo:
            _create(events, name=bad)
        assert _code(excinfo) == "ValidationException"
        assert "regular expression pattern" in str(excinfo.value)
        with pytest.raises(events.exceptions.ClientError) as excinfo:
            events.describe_connection(Name=bad)
        assert _code(excinfo) == "ValidationException"
    with pytest.raises(events.exceptions.ClientError) as excinfo:
        events.list_connections(NamePrefix="bad prefix")
    assert _code(excinfo) == "ValidationException"


def test_create_refuses_another_types_parameters(events):
    with pytest.raises(events.exceptions.ClientError) as excinfo:
        events.create_connection(
            Name=_name(),
            AuthorizationType="API_KEY",
            AuthParameters={
                "ApiKeyAuthParameters": {"ApiKeyName": "k", "ApiKeyValue": "v"},
                "BasicAuthParameters": {"Username": "u", "Password": "p"},
            },
        )
    assert _code(excinfo) == "ValidationException"


# ---------------------------------------------------------------------------
# The control endpoint


def test_forced_deauthorization_as_aws_does_after_a_401(events, secrets, control):
    name, _ = _create(events)
    reason = "Authorization failed: the partner answered 401"
    forced = control(
        "/moto-ext/connection/state",
        {"name": name, "state": "DEAUTHORIZED", "state_reason": reason},
    )
    assert forced["ConnectionState"] == "DEAUTHORIZED" and forced["StateReason"] == reason
    described = events.describe_connection(Name=name)
    assert described["StateReason"] == reason
    assert "ApiKeyAuthParameters" not in described["AuthParameters"]
    listed = events.list_connections(ConnectionState="DEAUTHORIZED")["Connections"]
    assert [(c["Name"], c["StateReason"]) for c in listed] == [(name, reason)]

    events.update_connection(
        Name=name,
        AuthParameters={"ApiKeyAuthParameters": {"ApiKeyName": "x-api-key", "ApiKeyValue": "v3"}},
    )
    described = events.describe_connection(Name=name)
    assert described["ConnectionState"] == "AUTHORIZED"
    assert "StateReason" not in described


def test_forced_transitional_state_settles_where_told(events, control):
    name, _ = _create(events, kind="OAUTH_CLIENT_CREDENTIALS")
    control(
        "/moto-ext/connection/state",
        {
            "name": name,
            "state": "AUTHORIZING",
            "settle_seconds": 0.5,
            "settles_to": "DEAUTHORIZED",
            "settles_to_reason": "OAuth token refresh failed",
        },
    )
    assert events.describe_connection(Name=name)["ConnectionState"] == "AUTHORIZING"
    time.sleep(0.55)
    described = events.describe_connection(Name=name)
    assert described["ConnectionState"] == "DEAUTHORIZED"
    assert described["StateReason"] == "OAuth token refresh failed"


def test_touch_moves_last_modified_time(events, control):
    name, _ = _create(events)
    before = events.describe_connection(Name=name)
    touched = control(
        "/moto-ext/connection/touch",
        {"name": name, "description": "edited in the console", "last_modified_time": 2e9},
    )
    assert touched["LastModifiedTime"] == 2e9
    after = events.describe_connection(Name=name)
    assert after["LastModifiedTime"].timestamp() == 2e9
    assert after["Description"] == "edited in the console"
    assert after["LastAuthorizedTime"] == before["LastAuthorizedTime"]


def test_control_endpoint_errors(control):
    missing = control(
        "/moto-ext/connection/state", {"name": "nope", "state": "AUTHORIZED"}, status=404
    )
    assert missing["error"] == "ResourceNotFoundException"
    control("/moto-ext/connection/state", {"name": "nope", "state": "BROKEN"}, status=400)
    control("/moto-ext/config", {"settle_seconds": -1}, status=400)
    control("/moto-ext/connection/touch", {"name": "x", "account_id": "12"}, status=400)
    control("/moto-ext/nothing-here", {}, status=404)
    routes = control("/moto-ext/", method="GET")["routes"]
    assert "POST /moto-ext/connection/state" in routes


# ---------------------------------------------------------------------------
# ListConnections


def _all_pages(list_call, key, **kwargs):
    pages, token = [], None
    while True:
        answer = list_call(**kwargs, **({"NextToken": token} if token else {}))
        pages.append(answer[key])
        token = answer.get("NextToken")
        if not token:
            return pages


def test_list_connections_pages_250_by_100(events):
    names = [f"page-{i:03d}" for i in range(250)]
    for name in reversed(names):
        _create(events, name=name)

    pages = _all_pages(events.list_connections, "Connections", Limit=100)

    assert [len(page) for page in pages] == [100, 100, 50]
    assert [c["Name"] for page in pages for c in page] == names
    item = pages[0][0]
    assert set(item) == {
        "ConnectionArn",
        "Name",
        "ConnectionState",
        "AuthorizationType",
        "CreationTime",
        "LastModifiedTime",
        "LastAuthorizedTime",
    }
    assert item["ConnectionState"] == "AUTHORIZED" and item["AuthorizationType"] == "API_KEY"
    # No Limit: 100 at most.
    assert len(events.list_connections()["Connections"]) == 100
    assert "NextToken" not in events.list_connections(Limit=100, NamePrefix="page-2")


def test_list_connections_refuses_bad_limits_and_tokens(events):
    for i in range(3):
        _create(events, name=f"tok-{i}")
    first = events.list_connections(Limit=1)
    with pytest.raises(events.exceptions.ClientError) as excinfo:
        events.list_connections(Limit=101)
    assert _code(excinfo) == "ValidationException"
    for token in ("not-a-token", "e30"):
        with pytest.raises(events.exceptions.ClientError) as excinfo:
            events.list_connections(NextToken=token)
        assert _code(excinfo) == "InvalidToken"
        assert excinfo.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    # A token is for the filters it was issued with.
    with pytest.raises(events.exceptions.ClientError) as excinfo:
        events.list_connections(NextToken=first["NextToken"], NamePrefix="tok")
    assert _code(excinfo) == "InvalidToken"
    second = events.list_connections(Limit=1, NextToken=first["NextToken"])
    assert [c["Name"] for c in second["Connections"]] == ["tok-1"]


def test_list_connections_filters_by_prefix_and_state(events, control):
    for i in range(6):
        _create(events, name=f"alpha-{i}")
        _create(events, name=f"beta-{i}")
    for i in (1, 3):
        control("/moto-ext/connection/state", {"name": f"alpha-{i}", "state": "DEAUTHORIZED"})
    control("/moto-ext/connection/state", {"name": "beta-2", "state": "DEAUTHORIZED"})

    alpha = events.list_connections(NamePrefix="alpha")["Connections"]
    assert [c["Name"] for c in alpha] == [f"alpha-{i}" for i in range(6)]
    down = events.list_connections(ConnectionState="DEAUTHORIZED")["Connections"]
    assert [c["Name"] for c in down] == ["alpha-1", "alpha-3", "beta-2"]
    both = _all_pages(
        events.list_connections,
        "Connections",
        NamePrefix="alpha",
        ConnectionState="AUTHORIZED",
        Limit=2,
    )
    assert [[c["Name"] for c in page] for page in both] == [
        ["alpha-0", "alpha-2"],
        ["alpha-4", "alpha-5"],
    ]
    with pytest.raises(events.exceptions.ClientError) as excinfo:
        events.list_connections(ConnectionState="BROKEN")
    assert _code(excinfo) == "ValidationException"


def test_a_fleet_of_3000_is_swept_quickly(events, control):
    seeded = control(
        "/moto-ext/connections/seed",
        {"count": 3000, "prefix": "fleet-", "states": ["AUTHORIZED", "AUTHORIZED", "DEAUTHORIZED"]},
    )
    assert seeded == {"created": 3000, "first": "fleet-00000", "last": "fleet-02999"}

    timings, seen, token = [], [], None
    while True:
        started = time.perf_counter()
        answer = events.list_connections(Limit=100, **({"NextToken": token} if token else {}))
        timings.append(time.perf_counter() - started)
        seen += [c["Name"] for c in answer["Connections"]]
        token = answer.get("NextToken")
        if not token:
            break

    assert len(timings) == 30
    assert seen == [f"fleet-{i:05d}" for i in range(3000)]
    # Round trips, so an upper bound of the server's share (under a millisecond).
    assert statistics.median(timings) < 0.05, timings
    down = _all_pages(events.list_connections, "Connections", ConnectionState="DEAUTHORIZED")
    assert sum(len(page) for page in down) == 1000


# ---------------------------------------------------------------------------
# Accounts


def test_assumed_role_in_another_account_sees_its_own_connections(ext, events, control):
    mine, _ = _create(events, name="mine")
    sts = _client(ext.url, "sts")
    credentials = sts.assume_role(
        RoleArn=f"arn:aws:iam::{OTHER_ACCOUNT}:role/eventbridge-admin", RoleSessionName="moto-ext"
    )["Credentials"]
    other = _client(
        ext.url,
        "events",
        aws_access_key_id=credentials["AccessKeyId"],
        aws_secret_access_key=credentials["SecretAccessKey"],
        aws_session_token=credentials["SessionToken"],
    )
    other_sts = _client(
        ext.url,
        "sts",
        aws_access_key_id=credentials["AccessKeyId"],
        aws_secret_access_key=credentials["SecretAccessKey"],
        aws_session_token=credentials["SessionToken"],
    )
    assert other_sts.get_caller_identity()["Account"] == OTHER_ACCOUNT

    theirs, created = _create(other, name="theirs")

    assert f":{OTHER_ACCOUNT}:connection/theirs/" in created["ConnectionArn"]
    assert [c["Name"] for c in other.list_connections()["Connections"]] == ["theirs"]
    assert [c["Name"] for c in events.list_connections()["Connections"]] == ["mine"]
    with pytest.raises(other.exceptions.ResourceNotFoundException):
        other.describe_connection(Name="mine")
    # The same name may exist in both accounts.
    _create(other, name="mine")
    # The control endpoint addresses the other account by id.
    control(
        "/moto-ext/connection/state",
        {"account_id": OTHER_ACCOUNT, "region": REGION, "name": "theirs", "state": "DEAUTHORIZED"},
    )
    assert other.describe_connection(Name="theirs")["ConnectionState"] == "DEAUTHORIZED"
    assert events.describe_connection(Name="mine")["ConnectionState"] == "AUTHORIZED"
    secret_arn = other.describe_connection(Name="theirs")["SecretArn"]
    assert f":{OTHER_ACCOUNT}:secret:" in secret_arn


def test_regions_are_separate(ext, events):
    _create(events, name="east")
    west = boto3.client(
        "events",
        endpoint_url=ext.url,
        region_name="eu-west-1",
        aws_access_key_id="testing",
        aws_secret_access_key="x",
    )
    assert west.list_connections()["Connections"] == []


# ---------------------------------------------------------------------------
# API destinations


def test_api_destinations_filter_by_connection_with_paging(events):
    _, first = _create(events, name="conn-one")
    _, second = _create(events, name="conn-two")
    for i in range(120):
        events.create_api_destination(
            Name=f"dest-one-{i:03d}",
            ConnectionArn=first["ConnectionArn"],
            InvocationEndpoint="https://partner.example.com/events",
            HttpMethod="POST",
        )
    for i in range(30):
        events.create_api_destination(
            Name=f"dest-two-{i:03d}",
            ConnectionArn=second["ConnectionArn"],
            InvocationEndpoint="https://partner.example.com/events",
            HttpMethod="PUT",
            InvocationRateLimitPerSecond=10,
        )

    pages = _all_pages(
        events.list_api_destinations,
        "ApiDestinations",
        ConnectionArn=first["ConnectionArn"],
        Limit=50,
    )
    assert [len(page) for page in pages] == [50, 50, 20]
    names = [d["Name"] for page in pages for d in page]
    assert names == [f"dest-one-{i:03d}" for i in range(120)]
    assert {d["ConnectionArn"] for page in pages for d in page} == {first["ConnectionArn"]}
    listed = events.list_api_destinations(NamePrefix="dest-two-02")["ApiDestinations"]
    assert [d["Name"] for d in listed] == [f"dest-two-{i:03d}" for i in range(20, 30)]
    assert listed[0]["InvocationRateLimitPerSecond"] == 10
    assert len(events.list_api_destinations()["ApiDestinations"]) == 100

    before = events.describe_api_destination(Name="dest-one-000")
    time.sleep(0.01)
    events.update_api_destination(Name="dest-one-000", ConnectionArn=second["ConnectionArn"])
    after = events.describe_api_destination(Name="dest-one-000")
    assert after["ConnectionArn"] == second["ConnectionArn"]
    assert after["LastModifiedTime"] > before["LastModifiedTime"]
    on_second = events.list_api_destinations(ConnectionArn=second["ConnectionArn"], Limit=100)
    assert "dest-one-000" in [d["Name"] for d in on_second["ApiDestinations"]]
    assert len(on_second["ApiDestinations"]) == 31


def test_api_destination_refusals(events):
    _, created = _create(events, name="conn-x")
    events.create_api_destination(
        Name="dest-x",
        ConnectionArn=created["ConnectionArn"],
        InvocationEndpoint="https://partner.example.com/",
        HttpMethod="POST",
    )
    with pytest.raises(events.exceptions.ResourceAlreadyExistsException):
        events.create_api_destination(
            Name="dest-x",
            ConnectionArn=created["ConnectionArn"],
            InvocationEndpoint="https://partner.example.com/",
            HttpMethod="POST",
        )
    gone = created["ConnectionArn"].replace("conn-x", "conn-gone")
    with pytest.raises(events.exceptions.ResourceNotFoundException):
        events.create_api_destination(
            Name="dest-y",
            ConnectionArn=gone,
            InvocationEndpoint="https://partner.example.com/",
            HttpMethod="POST",
        )
    with pytest.raises(events.exceptions.ResourceNotFoundException):
        events.update_api_destination(Name="dest-x", ConnectionArn=gone)


# ---------------------------------------------------------------------------
# Everything else is moto as usual


def test_other_services_are_unchanged(ext, events):
    s3 = _client(ext.url, "s3")
    s3.create_bucket(Bucket="moto-ext-bucket")
    s3.put_object(Bucket="moto-ext-bucket", Key="k", Body=b"body")
    assert s3.get_object(Bucket="moto-ext-bucket", Key="k")["Body"].read() == b"body"
    sm = _client(ext.url, "secretsmanager")
    sm.create_secret(Name=_name("plain"), SecretString="s3cr3t")
    assert _client(ext.url, "sts").get_caller_identity()["Account"] == ACCOUNT
    events.put_rule(Name="a-rule", ScheduleExpression="rate(5 minutes)")
    assert [r["Name"] for r in events.list_rules()["Rules"]] == ["a-rule"]
