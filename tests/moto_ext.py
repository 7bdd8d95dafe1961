"""moto's own server, with the EventBridge connection behaviour that AWS documents and moto lacks.

Run it as `moto_server` is run (every moto_server option passes through):

    python tests/moto_ext.py -H 127.0.0.1 -p PORT [--settle-seconds S]

`connections_app.devstack.start_moto(script="tests/moto_ext.py")` does so. It is the same Flask
app `moto_server` serves, in one process: every service (STS, Secrets Manager, S3, ...) works
unchanged, backends stay per account id and per Region (credentials from STS AssumeRole map to
the role's account, which sees its own connections only). Only moto's EventBridge classes are
patched, in this process: `moto.events.models.Connection`, `Destination`, `EventsBackend`, and
`moto.events.responses.EventsHandler`. Written against moto 5.2.5.

What it adds, and which AWS document says so ("API" is the Amazon EventBridge API Reference page
of that operation; "model" is botocore's `events` service model; "guide" the EventBridge User
Guide):

* Connection states and times. Every connection has ConnectionState, StateReason (when there is
  one), CreationTime, LastModifiedTime and LastAuthorizedTime (API DescribeConnection, model
  shape `Connection`). CreateConnection answers CREATING (OAuth: AUTHORIZING), which becomes
  AUTHORIZED; UpdateConnection UPDATING, then AUTHORIZED (or back to DEAUTHORIZED when the update
  carries no credentials for a deauthorized connection); DeauthorizeConnection DEAUTHORIZING,
  then DEAUTHORIZED; DeleteConnection DELETING, then the connection is gone and DescribeConnection
  answers ResourceNotFoundException (API ConnectionState values; guide "Connection states in
  EventBridge", "De-authorizing connections"). AWS itself, as recorded in LocalStack's snapshot
  tests, may answer AUTHORIZED at once to Create and Update of BASIC and API_KEY connections;
  here the transitional state is always shown first, so that code following it is exercised.
  A transitional state lasts the settle delay: 0 s by default, so it settles on the next request;
  the control endpoint (or --settle-seconds) sets it. LastAuthorizedTime is the time the
  connection settled to AUTHORIZED. Create answers ConnectionArn, ConnectionState, CreationTime
  and LastModifiedTime; Update, Deauthorize and Delete answer those and LastAuthorizedTime (API).
* DeauthorizeConnection, which moto lacks: "Removes all authorization parameters from the
  connection" (API): the authorization type's parameters (BasicAuthParameters, OAuthParameters,
  ApiKeyAuthParameters) and every invocation parameter whose value is secret leave the connection
  and its Secrets Manager secret (a new secret version without them). The secret itself stays;
  non-secret invocation parameters stay.
* UpdateConnection as documented (API; guide "Updating connections"): Description, and the
  parameters given, replace the stored ones member by member; a given header/query-string/body
  parameter list replaces that list. AuthorizationType may change: the old type's parameters go
  and the new type's come from the request. Parameters of another authorization type than the
  connection's, without a new AuthorizationType, have no effect (guide). The connection's secret
  gets a new version holding the new values (readable with GetSecretValue(SecretId=SecretArn)).
  An update carrying credentials (or changing the type) re-authorizes: LastAuthorizedTime moves;
  every update moves LastModifiedTime. A deauthorized connection updated with complete
  credentials is AUTHORIZED again; with incomplete ones it stays DEAUTHORIZED with a StateReason.
* DescribeConnection never echoes secret values (AWS does not: the model's response shapes have
  no Password, ClientSecret or ApiKeyValue member): Password, ClientSecret, ApiKeyValue and the
  Value of every header/query-string/body parameter with IsValueSecret true are dropped. The same
  scrubbing covers every other place that returns auth parameters (moto's /moto-api/data.json).
* The secret's JSON keys follow what AWS stores (as recorded from AWS in LocalStack's snapshot
  tests): username/password, api_key_name/api_key_value, client_id/client_secret/
  authorization_endpoint/http_method, invocation_http_parameters (oauth_http_parameters is a
  guess: no recording shows it).
* ListConnections (API): NamePrefix and ConnectionState filters, Limit 1-100 (100 when absent:
  the API states no default), NextToken paging with an opaque token (a token that does not
  decode, or that was issued for other filters, answers HTTP 400 InvalidToken, as the API says
  of expired tokens). Items carry ConnectionArn, Name, ConnectionState, StateReason,
  AuthorizationType, CreationTime, LastModifiedTime and LastAuthorizedTime, ordered by name.
  A page over 3,000 connections takes well under a millisecond server-side.
* ListApiDestinations (API): ConnectionArn and NamePrefix filters, Limit, NextToken, ordered by
  name. UpdateApiDestination may repoint a destination to another connection (moto had it); it
  now moves LastModifiedTime. CreateApiDestination refuses an existing name
  (ResourceAlreadyExistsException) and a connection that does not exist
  (ResourceNotFoundException), both listed for it in the API; Update refuses an unknown
  connection likewise.
* Errors: Update, Deauthorize and Delete of a connection in CREATING, UPDATING, AUTHORIZING,
  DEAUTHORIZING or DELETING answer ConcurrentModificationException, with the HTTP 400 status the
  API lists for it; an unknown name ResourceNotFoundException; CreateConnection with an existing
  name ResourceAlreadyExistsException (moto overwrote); a name outside the model's pattern
  `[\\.\\-_A-Za-z0-9]+`, 1-64 characters, ValidationException (every operation taking a
  connection Name, and NamePrefix); CreateConnection with another type's parameters than its
  AuthorizationType ValidationException ("You must include only authorization parameters for the
  AuthorizationType you specify", API); an unknown AuthorizationType or ConnectionState, or Limit
  over 100, ValidationException.

Not emulated: KmsKeyIdentifier and InvocationConnectivityParameters are ignored, and
AuthParameters.ConnectivityParameters is stored and shown but not acted on (private APIs, ACTIVE,
FAILED_CONNECTIVITY); no call is made to any OAuth endpoint (OAuth connections always authorize
unless a test forces otherwise); API destinations stay ACTIVE whatever their connection's state;
connection state-change events are not emitted.

Control endpoint for tests, under /moto-ext/ (moto uses no such path). JSON bodies; a connection
is addressed by "account_id" (default 123456789012, moto's default account), "region" (default
us-east-1) and "name". Answers are JSON; a connection is answered as DescribeConnection would
(secret values dropped, times in epoch seconds); errors are {"error": code, "message": text} with
HTTP 400, or 404 for an unknown connection or path.

    GET  /moto-ext/                    this list of routes and the current config
    GET  /moto-ext/config              {"settle_seconds": 0.0}
    POST /moto-ext/config              {"settle_seconds": 2} -> the config
    POST /moto-ext/connection/state    force a state as AWS itself would set it:
         {"name": ..., "state": "DEAUTHORIZED",
          "state_reason": "Authorization failed: the partner answered 401",
          "clear_credentials": bool   (default: true for DEAUTHORIZED/DEAUTHORIZING, as
                                       de-authorizing removes the authorization parameters),
          "hold": bool                (a transitional state stays until changed; default false),
          "settle_seconds": number    (default: the config's),
          "settles_to": state, "settles_to_reason": text
                                      (where a transitional state goes; default AUTHORIZED, or
                                       DEAUTHORIZED after DEAUTHORIZING, or gone after DELETING)}
    POST /moto-ext/connection/touch    an out-of-band (console) edit:
         {"name": ..., "description": optional, "last_modified_time": optional epoch seconds,
          default now}
    POST /moto-ext/connections/seed    many connections at once, as CreateConnection makes them
                                       (secrets included), settled:
         {"count": 3000, "prefix": "fleet-", "authorization_type": "API_KEY",
          "states": ["AUTHORIZED", "DEAUTHORIZED"] (cycled; default ["AUTHORIZED"])}
         -> {"created": n, "first": name, "last": name}; names are prefix + 5-digit index.
    POST /moto-ext/sts/role            a role's trust policy, as far as AssumeRole needs it
                                       (moto lets anyone assume any role; AWS refuses with
                                       AccessDenied): {"role_arn": ..., "external_id": "x"}
                                       (AssumeRole must carry that ExternalId) or
                                       {"role_arn": ..., "deny": true} (trusts nobody).
    POST /moto-ext/reset               {} or {"account_id": ..., "region": ...}: removes the
                                       connections (with their secrets) and API destinations of
                                       that account/Region, or of all, and restores the startup
                                       settle delay -> counts removed.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import bisect
import copy
import hashlib
import itertools
import json
import re
import threading
import time
from dataclasses import dataclass
from typing import Any

from moto import server as moto_server
from moto.core.exceptions import JsonRESTError
from moto.events import models as events_models
from moto.events import responses as events_responses
from moto.events.exceptions import (
    ResourceAlreadyExistsException,
    ResourceNotFoundException,
    ValidationException,
)
from moto.moto_api._internal import mock_random
from moto.moto_server.werkzeug_app import DomainDispatcherApplication
from moto.sts import exceptions as sts_exceptions
from moto.sts import models as sts_models
from moto.utilities.utils import CamelToUnderscoresWalker, get_partition
from werkzeug.wrappers import Request, Response

Connection = events_models.Connection
Destination = events_models.Destination
EventsBackend = events_models.EventsBackend
EventsHandler = events_responses.EventsHandler

DEFAULT_ACCOUNT = "123456789012"
DEFAULT_REGION = "us-east-1"
NAME_PATTERN = r"[\.\-_A-Za-z0-9]+"
_NAME = re.compile(NAME_PATTERN)
AUTH_TYPES = ("BASIC", "OAUTH_CLIENT_CREDENTIALS", "API_KEY")
STATES = (
    "CREATING",
    "UPDATING",
    "DELETING",
    "AUTHORIZED",
    "DEAUTHORIZED",
    "AUTHORIZING",
    "DEAUTHORIZING",
    "ACTIVE",
    "FAILED_CONNECTIVITY",
)
TRANSITIONAL = frozenset({"CREATING", "UPDATING", "AUTHORIZING", "DEAUTHORIZING", "DELETING"})
# Where a transitional state ends; None: the connection is gone.
SETTLES_TO: dict[str, str | None] = {
    "CREATING": "AUTHORIZED",
    "UPDATING": "AUTHORIZED",
    "AUTHORIZING": "AUTHORIZED",
    "DEAUTHORIZING": "DEAUTHORIZED",
    "DELETING": None,
}
BLOCK = {
    "BASIC": "BasicAuthParameters",
    "OAUTH_CLIENT_CREDENTIALS": "OAuthParameters",
    "API_KEY": "ApiKeyAuthParameters",
}
# The members each type needs to authorize (the Create* request shapes' required members).
REQUIRED = {
    "BASIC": (("Username",), ("Password",)),
    "API_KEY": (("ApiKeyName",), ("ApiKeyValue",)),
    "OAUTH_CLIENT_CREDENTIALS": (
        ("ClientParameters", "ClientID"),
        ("ClientParameters", "ClientSecret"),
        ("AuthorizationEndpoint",),
        ("HttpMethod",),
    ),
}
PARAMETER_LISTS = ("HeaderParameters", "QueryStringParameters", "BodyParameters")
PAGE_MAX = 100

# One lock for every connection and API destination operation: requests arrive on threads.
_lock = threading.RLock()
_config: dict[str, float] = {"settle_seconds": 0.0, "startup_settle_seconds": 0.0}


class ConcurrentModificationException(JsonRESTError):
    code = 400  # the API reference lists HTTP 400 for it

    def __init__(self, message: str):
        super().__init__("ConcurrentModificationException", message)


class InvalidTokenException(JsonRESTError):
    code = 400

    def __init__(self) -> None:
        super().__init__("InvalidToken", "The NextToken is invalid or has expired.")


# ---------------------------------------------------------------------------
# Validation, as the model's constraints word it


def _invalid(field: str, value: Any, constraint: str) -> ValidationException:
    return ValidationException(
        f"1 validation error detected: Value '{value}' at '{field}' failed to satisfy "
        f"constraint: {constraint}"
    )


def check_name(value: Any, field: str = "name") -> None:
    if not isinstance(value, str) or not value:
        raise _invalid(field, value, "Member must have length greater than or equal to 1")
    if len(value) > 64:
        raise _invalid(field, value, "Member must have length less than or equal to 64")
    if not _NAME.fullmatch(value):
        raise _invalid(
            field, value, f"Member must satisfy regular expression pattern: {NAME_PATTERN}"
        )


def _check_enum(value: Any, field: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise _invalid(field, value, f"Member must satisfy enum value set: [{', '.join(allowed)}]")


def _check_limit(limit: Any) -> int:
    if limit is None:
        return PAGE_MAX
    if isinstance(limit, bool) or not isinstance(limit, int):
        raise _invalid("limit", limit, "Member must be an integer")
    if limit < 1:
        raise _invalid("limit", limit, "Member must have value greater than or equal to 1")
    if limit > PAGE_MAX:
        raise _invalid("limit", limit, f"Member must have value less than or equal to {PAGE_MAX}")
    return limit


# ---------------------------------------------------------------------------
# Auth parameters: what may be shown, what the secret holds, what an update does


def _scrub_http(params: dict) -> dict:
    out: dict[str, Any] = {}
    for key, value in params.items():
        if key in PARAMETER_LISTS and isinstance(value, list):
            out[key] = [
                {k: v for k, v in item.items() if not (k == "Value" and item.get("IsValueSecret"))}
                for item in value
                if isinstance(item, dict)
            ]
        else:
            out[key] = copy.deepcopy(value)
    return out


def public_auth_parameters(params: dict | None) -> dict:
    """AuthParameters as AWS answers them: no Password, ClientSecret, ApiKeyValue, secret Value."""
    out: dict[str, Any] = {}
    for key, value in (params or {}).items():
        if not isinstance(value, dict):
            out[key] = copy.deepcopy(value)
        elif key == "BasicAuthParameters":
            out[key] = {k: v for k, v in value.items() if k != "Password"}
        elif key == "ApiKeyAuthParameters":
            out[key] = {k: v for k, v in value.items() if k != "ApiKeyValue"}
        elif key == "OAuthParameters":
            oauth: dict[str, Any] = {}
            for k, v in value.items():
                if k == "ClientParameters" and isinstance(v, dict):
                    oauth[k] = {ck: cv for ck, cv in v.items() if ck != "ClientSecret"}
                elif k == "OAuthHttpParameters" and isinstance(v, dict):
                    oauth[k] = _scrub_http(v)
                else:
                    oauth[k] = copy.deepcopy(v)
            out[key] = oauth
        elif key == "InvocationHttpParameters":
            out[key] = _scrub_http(value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def secret_document(params: dict) -> dict:
    """The JSON the connection's Secrets Manager secret holds (AWS's keys, as recorded)."""
    doc: dict[str, Any] = {}

    def copy_members(block: dict, pairs: tuple[tuple[str, str], ...]) -> None:
        for src, dst in pairs:
            if src in block:
                doc[dst] = block[src]

    copy_members(
        params.get("BasicAuthParameters") or {},
        (("Username", "username"), ("Password", "password")),
    )
    copy_members(
        params.get("ApiKeyAuthParameters") or {},
        (("ApiKeyName", "api_key_name"), ("ApiKeyValue", "api_key_value")),
    )
    oauth = params.get("OAuthParameters") or {}
    copy_members(
        oauth.get("ClientParameters") or {},
        (("ClientID", "client_id"), ("ClientSecret", "client_secret")),
    )
    copy_members(
        oauth, (("AuthorizationEndpoint", "authorization_endpoint"), ("HttpMethod", "http_method"))
    )
    if "OAuthHttpParameters" in oauth:
        doc["oauth_http_parameters"] = CamelToUnderscoresWalker.parse(
            copy.deepcopy(oauth["OAuthHttpParameters"])
        )
    if "InvocationHttpParameters" in params:
        doc["invocation_http_parameters"] = CamelToUnderscoresWalker.parse(
            copy.deepcopy(params["InvocationHttpParameters"])
        )
    return doc


def missing_credentials(auth_type: str, params: dict) -> list[str]:
    block_name = BLOCK[auth_type]
    missing = []
    for path in REQUIRED[auth_type]:
        node: Any = params.get(block_name)
        for part in path:
            node = node.get(part) if isinstance(node, dict) else None
        if not node:
            missing.append(".".join((block_name, *path)))
    return missing


def _merge(stored: Any, given: Any) -> Any:
    """Structures merge member by member; anything else (lists included) is replaced."""
    if not isinstance(stored, dict) or not isinstance(given, dict):
        return copy.deepcopy(given)
    out = copy.deepcopy(stored)
    for key, value in given.items():
        out[key] = (
            _merge(stored.get(key), value) if isinstance(value, dict) else copy.deepcopy(value)
        )
    return out


def _without_secret_parameters(http: dict) -> dict:
    out = copy.deepcopy(http)
    for key in PARAMETER_LISTS:
        if isinstance(out.get(key), list):
            out[key] = [p for p in out[key] if not (isinstance(p, dict) and p.get("IsValueSecret"))]
    return out


def _secrets_backend(account_id: str, region: str):
    from moto.secretsmanager import secretsmanager_backends

    return secretsmanager_backends[account_id][region]


# ---------------------------------------------------------------------------
# Connection


@dataclass(frozen=True)
class _Pending:
    target: str | None  # None: the connection goes away
    due: float
    reason: str | None
    authorizes: bool


def _connection_init(
    self,
    name: str,
    account_id: str,
    region_name: str,
    description: str | None,
    authorization_type: str,
    auth_parameters: dict | None,
) -> None:
    self.uuid = mock_random.uuid4()
    self.name = name
    self.account_id = account_id
    self.region = region_name
    self.description = description
    self.authorization_type = authorization_type
    self._auth = copy.deepcopy(auth_parameters or {})
    now = time.time()
    self.creation_time = now
    self.last_modified_time = now
    self.last_authorized_time = None
    self.state = None
    self.state_reason = None
    self._pending = None
    self.arn = (
        f"arn:{get_partition(region_name)}:events:{region_name}:{account_id}"
        f":connection/{name}/{self.uuid}"
    )
    self._secret_json = json.dumps(secret_document(self._auth))
    secret = _secrets_backend(account_id, region_name).create_managed_secret(
        service_name="events",
        secret_id=f"events!connection/{name}/{mock_random.uuid4()}",
        secret_string=self._secret_json,
        description=f"Auth parameters for EventBridge connection {name}",
    )
    self.secret_arn = secret.arn
    first = "AUTHORIZING" if authorization_type == "OAUTH_CLIENT_CREDENTIALS" else "CREATING"
    self._begin(first, "AUTHORIZED", authorizes=True, at=now)


def _connection_begin(
    self,
    state: str,
    target: str | None,
    *,
    reason: str | None = None,
    target_reason: str | None = None,
    authorizes: bool = False,
    delay: float | None = None,
    at: float | None = None,
) -> None:
    """Enter a transitional state, which becomes `target` `delay` seconds after `at` (now)."""
    delay = _config["settle_seconds"] if delay is None else float(delay)
    start = time.time() if at is None else at
    self.state = state
    self.state_reason = reason
    self._pending = _Pending(target, start + delay, target_reason, authorizes)


def _connection_settle(self, backend: EventsBackend) -> bool:
    """Finish a transitional state that is due; False when the connection is gone."""
    pending = self._pending
    if pending is None or time.time() < pending.due:
        return True
    self._pending = None
    if pending.target is None:
        backend._ext_remove(self)
        return False
    self.state = pending.target
    self.state_reason = pending.reason
    if pending.authorizes and pending.target == "AUTHORIZED":
        self.last_authorized_time = pending.due
    return True


def _connection_write_secret(self) -> None:
    """A new secret version when what the secret must hold changed (as UpdateConnection does)."""
    text = json.dumps(secret_document(self._auth))
    if text == self._secret_json:
        return
    _secrets_backend(self.account_id, self.region).put_secret_value(
        secret_id=self.secret_arn,
        secret_string=text,
        secret_binary=None,
        client_request_token=None,
        version_stages=["AWSCURRENT"],
    )
    self._secret_json = text


def _connection_clear_credentials(self) -> None:
    """What DeauthorizeConnection removes: the type's parameters and every secret value."""
    auth = {k: v for k, v in self._auth.items() if k not in BLOCK.values()}
    if isinstance(auth.get("InvocationHttpParameters"), dict):
        auth["InvocationHttpParameters"] = _without_secret_parameters(
            auth["InvocationHttpParameters"]
        )
    self._auth = auth
    self._write_secret()


def _times(self) -> dict[str, Any]:
    out = {"CreationTime": self.creation_time, "LastModifiedTime": self.last_modified_time}
    if self.last_authorized_time is not None:
        out["LastAuthorizedTime"] = self.last_authorized_time
    return out


def _connection_created(self) -> dict[str, Any]:
    """CreateConnection's answer: no LastAuthorizedTime in its response syntax."""
    return {
        "ConnectionArn": self.arn,
        "ConnectionState": self.state,
        "CreationTime": self.creation_time,
        "LastModifiedTime": self.last_modified_time,
    }


def _connection_short(self) -> dict[str, Any]:
    """Update/Deauthorize/DeleteConnection's answer."""
    return {"ConnectionArn": self.arn, "ConnectionState": self.state, **self._times()}


def _connection_summary(self) -> dict[str, Any]:
    """A ListConnections item (model shape Connection)."""
    out = {
        "ConnectionArn": self.arn,
        "Name": self.name,
        "ConnectionState": self.state,
        "AuthorizationType": self.authorization_type,
        **self._times(),
    }
    if self.state_reason:
        out["StateReason"] = self.state_reason
    return out


def _connection_describe(self) -> dict[str, Any]:
    """DescribeConnection's answer, secret values left out."""
    out = {
        "ConnectionArn": self.arn,
        "Name": self.name,
        "ConnectionState": self.state,
        "AuthorizationType": self.authorization_type,
        "SecretArn": self.secret_arn,
        "AuthParameters": public_auth_parameters(self._auth),
        **self._times(),
    }
    if self.description is not None:
        out["Description"] = self.description
    if self.state_reason:
        out["StateReason"] = self.state_reason
    return out


# ---------------------------------------------------------------------------
# EventsBackend: connections


def _ext_get(self, name: Any, *, verb: str = "") -> Connection:
    check_name(name)
    conn = self.connections.get(name)
    if conn is None or not conn._settle(self):
        prefix = f"Failed to {verb} the connection(s). " if verb else ""
        raise ResourceNotFoundException(f"{prefix}Connection '{name}' does not exist.")
    return conn


def _ext_settled(conn: Connection, operation: str) -> None:
    if conn.state in TRANSITIONAL:
        raise ConcurrentModificationException(
            f"Connection '{conn.name}' is {conn.state}: {operation} can be retried when that "
            "operation completes."
        )


def _ext_remove(self, conn: Connection) -> None:
    if self.connections.get(conn.name) is conn:
        del self.connections[conn.name]
    conn._pending = None
    _secrets_backend(conn.account_id, conn.region).delete_secret(
        secret_id=conn.secret_arn, recovery_window_in_days=None, force_delete_without_recovery=True
    )


def _ext_connection_by_arn(self, arn: Any) -> Connection:
    for conn in list(self.connections.values()):
        if conn.arn == arn and conn._settle(self):
            return conn
    raise ResourceNotFoundException(f"Connection '{arn}' does not exist.")


def create_connection(
    self,
    name: str,
    description: str | None,
    authorization_type: str,
    auth_parameters: dict | None,
) -> Connection:
    with _lock:
        check_name(name)
        _check_enum(authorization_type, "authorizationType", AUTH_TYPES)
        existing = self.connections.get(name)
        if existing is not None and existing._settle(self):
            raise ResourceAlreadyExistsException(f"Connection {name} already exists.")
        params = auth_parameters or {}
        others = [BLOCK[t] for t in AUTH_TYPES if t != authorization_type and BLOCK[t] in params]
        if BLOCK[authorization_type] not in params or others:
            raise ValidationException(
                f"AuthParameters must hold {BLOCK[authorization_type]}, and only the "
                f"authorization parameters of AuthorizationType {authorization_type}."
            )
        conn = Connection(
            name, self.account_id, self.region_name, description, authorization_type, params
        )
        self.connections[name] = conn
        return conn


def update_connection(
    self,
    name: str,
    description: str | None = None,
    authorization_type: str | None = None,
    auth_parameters: dict | None = None,
) -> dict[str, Any]:
    with _lock:
        conn = self._ext_get(name)
        _ext_settled(conn, "UpdateConnection")
        new_type = authorization_type or conn.authorization_type
        _check_enum(new_type, "authorizationType", AUTH_TYPES)
        given = auth_parameters or {}
        auth = copy.deepcopy(conn._auth)
        block = BLOCK[new_type]
        type_changed = new_type != conn.authorization_type
        # Parameters of another type, without that type as AuthorizationType: no effect (guide).
        credentials_given = block in given
        if type_changed:
            auth.pop(BLOCK[conn.authorization_type], None)
            auth[block] = copy.deepcopy(given.get(block) or {})
        elif credentials_given:
            auth[block] = _merge(auth.get(block) or {}, given[block])
        for key in ("InvocationHttpParameters", "ConnectivityParameters"):
            if key in given:
                auth[key] = _merge(auth.get(key) or {}, given[key])

        now = time.time()
        if description is not None:
            conn.description = description
        conn.authorization_type = new_type
        conn._auth = auth
        conn._write_secret()
        conn.last_modified_time = now
        reauthorize = type_changed or credentials_given
        missing = missing_credentials(new_type, auth)
        if reauthorize and not missing:
            conn._begin("UPDATING", "AUTHORIZED", authorizes=True, at=now)
        elif reauthorize:
            conn._begin(
                "UPDATING",
                "DEAUTHORIZED",
                target_reason="Authorization parameters are incomplete: " + ", ".join(missing),
                at=now,
            )
        else:  # nothing to authorize anew: back to where it was, reason and all
            conn._begin("UPDATING", conn.state, target_reason=conn.state_reason, at=now)
        return conn.short()


def deauthorize_connection(self, name: str) -> dict[str, Any]:
    with _lock:
        conn = self._ext_get(name)
        _ext_settled(conn, "DeauthorizeConnection")
        conn._clear_credentials()
        conn.last_modified_time = now = time.time()
        conn._begin("DEAUTHORIZING", "DEAUTHORIZED", at=now)
        return conn.short()


def delete_connection(self, name: str) -> dict[str, Any]:
    with _lock:
        conn = self._ext_get(name)
        _ext_settled(conn, "DeleteConnection")
        conn._begin("DELETING", None)
        return conn.short()


def describe_connection(self, name: str) -> dict[str, Any]:
    with _lock:
        return self._ext_get(name, verb="describe").describe()


def _token_filters(filters: list[Any]) -> str:
    return hashlib.sha256(json.dumps(filters).encode()).hexdigest()[:16]


def _encode_token(after: str, filters: list[Any]) -> str:
    raw = json.dumps({"after": after, "filters": _token_filters(filters)}).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_token(token: Any, filters: list[Any]) -> str:
    try:
        text = base64.urlsafe_b64decode(str(token) + "=" * (-len(str(token)) % 4))
        data = json.loads(text)
        after = data["after"]
        same = data["filters"] == _token_filters(filters)
    except (binascii.Error, ValueError, KeyError, TypeError):
        raise InvalidTokenException() from None
    if not same or not isinstance(after, str):
        raise InvalidTokenException()
    return after


def paginate(items: list[Any], filters: list[Any], limit: Any, next_token: Any):
    """A page of `items` (each with .name), ordered by name, and the next page's token."""
    limit = _check_limit(limit)
    items = sorted(items, key=lambda item: item.name)
    start = 0
    if next_token is not None:
        after = _decode_token(next_token, filters)
        start = bisect.bisect_right([item.name for item in items], after)
    page = items[start : start + limit]
    more = start + limit < len(items)
    return page, (_encode_token(page[-1].name, filters) if more and page else None)


def list_connections(
    self,
    name_prefix: str | None = None,
    connection_state: str | None = None,
    limit: int | None = None,
    next_token: str | None = None,
):
    with _lock:
        if name_prefix is not None:
            check_name(name_prefix, "namePrefix")
        if connection_state is not None:
            _check_enum(connection_state, "connectionState", STATES)
        chosen = []
        for conn in list(self.connections.values()):
            if not conn._settle(self):
                continue
            if name_prefix and not conn.name.startswith(name_prefix):
                continue
            if connection_state and conn.state != connection_state:
                continue
            chosen.append(conn)
        return paginate(chosen, ["connections", name_prefix, connection_state], limit, next_token)


# ---------------------------------------------------------------------------
# EventsBackend and Destination: API destinations

_destination_init = Destination.__init__


def _destination_init_ext(self, *args: Any, **kwargs: Any) -> None:
    _destination_init(self, *args, **kwargs)
    self.last_modified_time = self.creation_time


def _destination_describe(self) -> dict[str, Any]:
    out = {
        "ApiDestinationArn": self.arn,
        "Name": self.name,
        "ApiDestinationState": self.state,
        "ConnectionArn": self.connection_arn,
        "InvocationEndpoint": self.invocation_endpoint,
        "HttpMethod": self.http_method,
        "CreationTime": self.creation_time,
        "LastModifiedTime": self.last_modified_time,
    }
    if self.description is not None:
        out["Description"] = self.description
    if self.invocation_rate_limit_per_second is not None:
        out["InvocationRateLimitPerSecond"] = self.invocation_rate_limit_per_second
    return out


def _destination_summary(self) -> dict[str, Any]:
    out = self.describe()
    out.pop("Description", None)
    return out


def _destination_short(self) -> dict[str, Any]:
    return {
        "ApiDestinationArn": self.arn,
        "ApiDestinationState": self.state,
        "CreationTime": self.creation_time,
        "LastModifiedTime": self.last_modified_time,
    }


_create_api_destination = EventsBackend.create_api_destination
_update_api_destination = EventsBackend.update_api_destination


def create_api_destination(self, name: str, description, connection_arn, *args, **kwargs):
    with _lock:
        check_name(name)
        if name in self.destinations:
            raise ResourceAlreadyExistsException(f"An api-destination '{name}' already exists.")
        self._ext_connection_by_arn(connection_arn)
        return _create_api_destination(self, name, description, connection_arn, *args, **kwargs)


def update_api_destination(self, name: str, **kwargs: Any) -> dict[str, Any]:
    with _lock:
        check_name(name)
        destination = self.destinations.get(name)
        if destination is None:
            raise ResourceNotFoundException(f"An api-destination '{name}' does not exist.")
        if kwargs.get("connection_arn") is not None:
            self._ext_connection_by_arn(kwargs["connection_arn"])
        _update_api_destination(self, name=name, **kwargs)
        destination.last_modified_time = time.time()
        return destination.describe_short()


def list_api_destinations(
    self,
    name_prefix: str | None = None,
    connection_arn: str | None = None,
    limit: int | None = None,
    next_token: str | None = None,
):
    with _lock:
        if name_prefix is not None:
            check_name(name_prefix, "namePrefix")
        chosen = [
            d
            for d in self.destinations.values()
            if (not name_prefix or d.name.startswith(name_prefix))
            and (not connection_arn or d.connection_arn == connection_arn)
        ]
        return paginate(chosen, ["destinations", name_prefix, connection_arn], limit, next_token)


# ---------------------------------------------------------------------------
# EventsHandler


def _answer(self, body: dict[str, Any]):
    return json.dumps(body), self.response_headers


def handle_create_connection(self):
    conn = self.events_backend.create_connection(
        self._get_param("Name"),
        self._get_param("Description"),
        self._get_param("AuthorizationType"),
        self._get_param("AuthParameters"),
    )
    return _answer(self, conn.created())


def handle_update_connection(self):
    return _answer(
        self,
        self.events_backend.update_connection(
            name=self._get_param("Name"),
            description=self._get_param("Description"),
            authorization_type=self._get_param("AuthorizationType"),
            auth_parameters=self._get_param("AuthParameters"),
        ),
    )


def handle_deauthorize_connection(self):
    return _answer(self, self.events_backend.deauthorize_connection(self._get_param("Name")))


def handle_delete_connection(self):
    return _answer(self, self.events_backend.delete_connection(self._get_param("Name")))


def handle_describe_connection(self):
    return _answer(self, self.events_backend.describe_connection(self._get_param("Name")))


def handle_list_connections(self):
    page, token = self.events_backend.list_connections(
        name_prefix=self._get_param("NamePrefix"),
        connection_state=self._get_param("ConnectionState"),
        limit=self._get_param("Limit"),
        next_token=self._get_param("NextToken"),
    )
    body: dict[str, Any] = {"Connections": [conn.summary() for conn in page]}
    if token:
        body["NextToken"] = token
    return _answer(self, body)


def handle_list_api_destinations(self):
    page, token = self.events_backend.list_api_destinations(
        name_prefix=self._get_param("NamePrefix"),
        connection_arn=self._get_param("ConnectionArn"),
        limit=self._get_param("Limit"),
        next_token=self._get_param("NextToken"),
    )
    body: dict[str, Any] = {"ApiDestinations": [d.summary() for d in page]}
    if token:
        body["NextToken"] = token
    return _answer(self, body)


_installed = False


def install(settle_seconds: float = 0.0) -> None:
    """Patch moto's EventBridge classes in this process (idempotent)."""
    global _installed
    _config["settle_seconds"] = _config["startup_settle_seconds"] = float(settle_seconds)
    if _installed:
        return
    _installed = True
    sts_models.STSBackend.assume_role = _assume_role_checked
    for attr, value in {
        "__init__": _connection_init,
        "_begin": _connection_begin,
        "_settle": _connection_settle,
        "_write_secret": _connection_write_secret,
        "_clear_credentials": _connection_clear_credentials,
        "_times": _times,
        "created": _connection_created,
        "short": _connection_short,
        "describe_short": _connection_short,
        "summary": _connection_summary,
        "describe": _connection_describe,
        # moto's /moto-api/data.json lists public attributes: only the scrubbed view is one.
        "auth_parameters": property(lambda self: public_auth_parameters(self._auth)),
    }.items():
        setattr(Connection, attr, value)
    for attr, value in {
        "__init__": _destination_init_ext,
        "describe": _destination_describe,
        "describe_short": _destination_short,
        "summary": _destination_summary,
    }.items():
        setattr(Destination, attr, value)
    for attr, value in {
        "_ext_get": _ext_get,
        "_ext_remove": _ext_remove,
        "_ext_connection_by_arn": _ext_connection_by_arn,
        "create_connection": create_connection,
        "update_connection": update_connection,
        "deauthorize_connection": deauthorize_connection,
        "delete_connection": delete_connection,
        "describe_connection": describe_connection,
        "list_connections": list_connections,
        "create_api_destination": create_api_destination,
        "update_api_destination": update_api_destination,
        "list_api_destinations": list_api_destinations,
    }.items():
        setattr(EventsBackend, attr, value)
    for attr, value in {
        "create_connection": handle_create_connection,
        "update_connection": handle_update_connection,
        "deauthorize_connection": handle_deauthorize_connection,
        "delete_connection": handle_delete_connection,
        "describe_connection": handle_describe_connection,
        "list_connections": handle_list_connections,
        "list_api_destinations": handle_list_api_destinations,
    }.items():
        setattr(EventsHandler, attr, value)


# ---------------------------------------------------------------------------
# The control endpoint


class ControlError(Exception):
    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _backend(body: dict) -> EventsBackend:
    account = str(body.get("account_id") or DEFAULT_ACCOUNT)
    region = str(body.get("region") or DEFAULT_REGION)
    if not re.fullmatch(r"\d{12}", account):
        raise ControlError(400, "ValidationException", f"account_id {account!r}: 12 digits")
    regions = events_models.events_backends[account]
    if region not in regions:
        raise ControlError(400, "ValidationException", f"unknown region {region!r}")
    return regions[region]


def _required(body: dict, key: str) -> Any:
    if body.get(key) in (None, ""):
        raise ControlError(400, "ValidationException", f"{key!r} is required")
    return body[key]


def _seconds(value: Any, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 3600:
        raise ControlError(400, "ValidationException", f"{key!r}: a number of seconds, 0-3600")
    return float(value)


def control_config(body: dict, method: str) -> dict:
    if method == "POST":
        _config["settle_seconds"] = _seconds(_required(body, "settle_seconds"), "settle_seconds")
    return {"settle_seconds": _config["settle_seconds"]}


def control_state(body: dict, method: str) -> dict:
    backend = _backend(body)
    state = _required(body, "state")
    if state not in STATES:
        raise ControlError(400, "ValidationException", f"state: one of {', '.join(STATES)}")
    with _lock:
        conn = backend._ext_get(_required(body, "name"))
        if body.get("clear_credentials", state in ("DEAUTHORIZED", "DEAUTHORIZING")):
            conn._clear_credentials()
        if state in TRANSITIONAL and not body.get("hold"):
            target = body.get("settles_to", SETTLES_TO[state])
            if target is not None and (target not in STATES or target in TRANSITIONAL):
                raise ControlError(400, "ValidationException", "settles_to: a settled state")
            delay = body.get("settle_seconds")
            conn._begin(
                state,
                target,
                reason=body.get("state_reason"),
                target_reason=body.get("settles_to_reason"),
                authorizes=target == "AUTHORIZED",
                delay=None if delay is None else _seconds(delay, "settle_seconds"),
            )
        else:
            conn._pending = None
            conn.state = state
            conn.state_reason = body.get("state_reason")
            if state == "AUTHORIZED":
                conn.last_authorized_time = time.time()
        return conn.describe()


def control_touch(body: dict, method: str) -> dict:
    backend = _backend(body)
    with _lock:
        conn = backend._ext_get(_required(body, "name"))
        if "description" in body:
            conn.description = body["description"]
        when = body.get("last_modified_time")
        if when is not None and (isinstance(when, bool) or not isinstance(when, int | float)):
            raise ControlError(400, "ValidationException", "last_modified_time: epoch seconds")
        conn.last_modified_time = time.time() if when is None else float(when)
        return conn.describe()


def _seed_parameters(auth_type: str, name: str) -> dict:
    value = f"seed-{mock_random.get_random_hex(16)}"
    if auth_type == "BASIC":
        return {"BasicAuthParameters": {"Username": name, "Password": value}}
    if auth_type == "OAUTH_CLIENT_CREDENTIALS":
        return {
            "OAuthParameters": {
                "ClientParameters": {"ClientID": name, "ClientSecret": value},
                "AuthorizationEndpoint": "https://auth.example.com/oauth2/token",
                "HttpMethod": "POST",
            }
        }
    return {"ApiKeyAuthParameters": {"ApiKeyName": "x-api-key", "ApiKeyValue": value}}


def control_seed(body: dict, method: str) -> dict:
    backend = _backend(body)
    count = body.get("count")
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= 10000:
        raise ControlError(400, "ValidationException", "count: 1-10000")
    prefix = str(body.get("prefix", "fleet-"))
    auth_type = body.get("authorization_type", "API_KEY")
    states = body.get("states") or ["AUTHORIZED"]
    if auth_type not in AUTH_TYPES or any(s not in STATES or s in TRANSITIONAL for s in states):
        raise ControlError(400, "ValidationException", "authorization_type or states")
    names = [f"{prefix}{i:05d}" for i in range(count)]
    for name in names:
        check_name(name)
    with _lock:
        for name, state in zip(names, itertools.cycle(states), strict=False):
            conn = backend.create_connection(
                name, f"seeded {name}", auth_type, _seed_parameters(auth_type, name)
            )
            conn._pending = None
            conn.state = state
            if state == "AUTHORIZED":
                conn.last_authorized_time = conn.creation_time
    return {"created": count, "first": names[0], "last": names[-1]}


def control_reset(body: dict, method: str) -> dict:
    if body.get("account_id") or body.get("region"):
        backends = [_backend(body)]
    else:
        backends = [
            backend
            for regions in list(dict.values(events_models.events_backends))
            for backend in list(dict.values(regions))
        ]
    removed = destinations = 0
    with _lock:
        for backend in backends:
            for conn in list(backend.connections.values()):
                backend._ext_remove(conn)
                removed += 1
            destinations += len(backend.destinations)
            backend.destinations.clear()
        _config["settle_seconds"] = _config["startup_settle_seconds"]
        if not (body.get("account_id") or body.get("region")):
            _trust.clear()
    return {
        "connections_removed": removed,
        "api_destinations_removed": destinations,
        "settle_seconds": _config["settle_seconds"],
    }


# Roles' trust policies, as far as AssumeRole needs them: moto lets anyone assume any role.
# AWS refuses AssumeRole (AccessDenied) when the role's trust policy requires an ExternalId
# (sts:ExternalId condition) that the call does not carry, or does not trust the caller at all.
_trust: dict[str, dict] = {}
_moto_assume_role = sts_models.STSBackend.assume_role


def _assume_role_checked(self, **kwargs):
    rule = _trust.get(kwargs.get("role_arn", ""))
    if rule is not None:
        denied = rule.get("deny") or (
            rule.get("external_id") and kwargs.get("external_id") != rule["external_id"]
        )
        if denied:
            raise sts_exceptions.STSClientError(
                "AccessDenied",
                f"User is not authorized to perform: sts:AssumeRole on resource: "
                f"{kwargs['role_arn']}",
            )
    return _moto_assume_role(self, **kwargs)


def control_role(body: dict, method: str) -> dict:
    """{"role_arn": ..., "external_id": "..."} (AssumeRole must carry it) or {"deny": true}."""
    role_arn = body.get("role_arn")
    if not isinstance(role_arn, str) or not role_arn.startswith("arn:"):
        raise ControlError(400, "ValidationException", "role_arn")
    with _lock:
        _trust[role_arn] = {"external_id": body.get("external_id"), "deny": bool(body.get("deny"))}
    return {"role_arn": role_arn, **_trust[role_arn]}


ROUTES = {
    ("POST", "/moto-ext/sts/role"): control_role,
    ("GET", "/moto-ext/config"): control_config,
    ("POST", "/moto-ext/config"): control_config,
    ("POST", "/moto-ext/connection/state"): control_state,
    ("POST", "/moto-ext/connection/touch"): control_touch,
    ("POST", "/moto-ext/connections/seed"): control_seed,
    ("POST", "/moto-ext/reset"): control_reset,
}


def control_app(environ: dict, start_response: Any):
    request = Request(environ)
    status = 200
    try:
        path = request.path.rstrip("/") or "/"
        if request.method == "GET" and path == "/moto-ext":
            result: Any = {
                "routes": [f"{m} {p}" for m, p in ROUTES],
                "settle_seconds": _config["settle_seconds"],
            }
        else:
            handler = ROUTES.get((request.method, path))
            if handler is None:
                raise ControlError(404, "NotFound", f"no route {request.method} {path}")
            body = request.get_json(silent=True) if request.method == "POST" else {}
            if body is None and request.method == "POST" and request.get_data():
                raise ControlError(400, "ValidationException", "the body is not JSON")
            if not isinstance(body or {}, dict):
                raise ControlError(400, "ValidationException", "the body is not a JSON object")
            result = handler(body or {}, request.method)
    except ControlError as exc:
        status, result = exc.status, {"error": exc.code, "message": exc.message}
    except JsonRESTError as exc:
        status = 404 if exc.error_type == "ResourceNotFoundException" else 400
        result = {"error": exc.error_type, "message": exc.message}
    response = Response(json.dumps(result), status=status, mimetype="application/json")
    return response(environ, start_response)


class ExtendedDispatcher(DomainDispatcherApplication):
    """moto's own WSGI dispatcher, with /moto-ext/ answered here."""

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        path = environ.get("PATH_INFO", "")
        if path == "/moto-ext" or path.startswith("/moto-ext/"):
            return control_app(environ, start_response)
        return super().__call__(environ, start_response)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="moto_server with EventBridge connection behaviour AWS documents",
        add_help=False,
    )
    parser.add_argument("--settle-seconds", type=float, default=0.0)
    ours, rest = parser.parse_known_args(argv)
    install(settle_seconds=ours.settle_seconds)
    moto_server.DomainDispatcherApplication = ExtendedDispatcher
    moto_server.main(rest or ["-H", "127.0.0.1"])


if __name__ == "__main__":
    main()
