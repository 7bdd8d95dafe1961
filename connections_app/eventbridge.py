"""AWS (EventBridge, and STS for targets' roles): the only module that imports boto3.

boto3 finds credentials through its normal chain and the endpoint through AWS_ENDPOINT_URL
(or AWS_ENDPOINT_URL_EVENTS), so the same code talks to AWS and to a local emulator. A target
with a role is reached with credentials from sts:AssumeRole (with its external ID), which
botocore refreshes before they expire; one client per target and service, shared by threads.
"""

from __future__ import annotations

import functools
import logging
import random
import threading
import time

import boto3
import botocore.credentials
import botocore.exceptions
import botocore.session
from botocore.config import Config
from django.conf import settings
from django.views.decorators.debug import sensitive_variables


class EventBridgeError(Exception):
    """An AWS problem with a message a person can act on (never a secret value)."""

    def __init__(self, message: str, *, code: str):
        super().__init__(message)
        self.message = message
        self.code = code


# AWS error codes, and what a person can do about each.
_MESSAGES = {
    "ResourceAlreadyExistsException": (
        "A connection with this name already exists in the account; choose another name."
    ),
    "LimitExceededException": (
        "The account has reached its EventBridge connection quota (3,000 per Region by "
        "default); delete unused connections or ask AWS for a higher quota."
    ),
    "AccessDeniedException": (
        "AWS denied the call: the app's IAM role lacks events:CreateConnection (and "
        "secretsmanager:CreateSecret) or a policy forbids it."
    ),
    "ThrottlingException": (
        "AWS throttled the request even after the SDK's standard retries; retry in a minute."
    ),
    "InternalException": "AWS had an internal error; retry later.",
    "ValidationException": "AWS rejected a parameter of the request.",
    "ResourceNotFoundException": (
        "The connection no longer exists in the account (deleted outside this dashboard?); "
        "Refresh the connection to record that."
    ),
    "ConcurrentModificationException": (
        "AWS is still applying another change to this connection (it is updating, "
        "authorizing or being deleted); retry once its state has settled."
    ),
}

_lock = threading.Lock()
_clients: dict[tuple, object] = {}
SESSION_NAME = "eventbridge-connections"


class _WithholdBodies(logging.Filter):
    """botocore logs whole request and response bodies at DEBUG, and they carry secret values.

    The records stay (operation, URL, headers, status), only the bodies are withheld, so that
    DEBUG logging stays safe to turn on in production.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(_withhold(arg) for arg in record.args)
        elif isinstance(record.args, dict):
            record.args = {key: _withhold(arg) for key, arg in record.args.items()}
        return True


def _withhold(arg):
    if isinstance(arg, bytes | bytearray | memoryview):  # parsers: "Response body: %r"
        return f"<{len(arg)} bytes withheld>"
    if isinstance(arg, dict) and "body" in arg:  # endpoint: "Making request ... params: %s"
        return {**arg, "body": "<withheld>"}
    return arg


# Logger filters see only records logged on that very logger: name each one that logs bodies.
for _name in ("botocore.endpoint", "botocore.parsers"):
    logging.getLogger(_name).addFilter(_WithholdBodies())


def _config(region: str, *, retries: bool) -> Config:
    return Config(
        region_name=region,
        connect_timeout=settings.AWS_CONNECT_TIMEOUT,
        read_timeout=settings.AWS_READ_TIMEOUT,
        retries={
            "mode": "standard",
            "total_max_attempts": settings.AWS_MAX_ATTEMPTS if retries else 1,
        },
    )


class _AssumedRole(botocore.credentials.CredentialProvider):
    """Credentials from sts:AssumeRole, fetched on first use and again before they expire."""

    METHOD = "assume-role"

    def __init__(self, sts, params: dict):
        super().__init__()
        self._refresh = botocore.credentials.create_assume_role_refresher(sts, params)

    def load(self):
        return botocore.credentials.DeferredRefreshableCredentials(
            refresh_using=self._refresh, method=self.METHOD
        )


def _session(target) -> boto3.session.Session:
    """The boto3 session for a target: the app's own credentials, or its assumed role."""
    region = target.region if target is not None else settings.AWS_REGION
    if target is None or not target.role_arn:
        return boto3.session.Session(region_name=region)
    sts = boto3.session.Session(region_name=region).client(
        "sts", config=_config(region, retries=True)
    )
    params = {"RoleArn": target.role_arn, "RoleSessionName": SESSION_NAME}
    if target.external_id:
        params["ExternalId"] = target.external_id
    core = botocore.session.Session()
    core.register_component(
        "credential_provider",
        botocore.credentials.CredentialResolver(providers=[_AssumedRole(sts, params)]),
    )
    return boto3.session.Session(botocore_session=core, region_name=region)


def _client(target, service: str, *, retries: bool = True):
    """One client per target (as configured now), service and retry policy; the clients of a
    target share one session, and so one set of assumed-role credentials."""
    who = (target.pk, target.role_arn, target.external_id, target.region) if target else None
    key = (who, service, retries)
    with _lock:
        if key not in _clients:
            if (who, "session") not in _clients:
                _clients[who, "session"] = _session(target)
            region = target.region if target is not None else settings.AWS_REGION
            _clients[key] = _clients[who, "session"].client(
                service, config=_config(region, retries=retries)
            )
        return _clients[key]


def events_client(target=None, *, retries: bool = True):
    return _client(target, "events", retries=retries)


def reset_clients() -> None:
    """Forget the process's clients (settings or endpoint changed, or tests)."""
    with _lock:
        _clients.clear()


def translate(exc: Exception) -> EventBridgeError:
    """Turn an SDK error into a message that names what happened, never what was sent."""
    if isinstance(exc, botocore.exceptions.ClientError):
        code = exc.response.get("Error", {}).get("Code", "Unknown")
        if exc.operation_name == "AssumeRole":
            return EventBridgeError(
                f"The target's role could not be assumed ({code}): check the role ARN, its "
                "trust policy (this app's principal, the external ID) and the app's "
                "sts:AssumeRole permission.",
                code="AssumeRoleFailed",
            )
        message = _MESSAGES.get(code, f"AWS refused the request ({code}).")
        return EventBridgeError(message, code=code)
    if isinstance(exc, botocore.exceptions.ParamValidationError):
        # botocore's report names parameters and rules, but can quote values: keep it out.
        return EventBridgeError(
            "The SDK rejected the request's parameters before sending it; "
            "check field lengths and required fields.",
            code="ParamValidationError",
        )
    if isinstance(
        exc, botocore.exceptions.ReadTimeoutError | botocore.exceptions.ConnectTimeoutError
    ):
        return EventBridgeError(
            "The EventBridge endpoint timed out; whether the call took effect is checked "
            "with describe_connection on retry.",
            code="Timeout",
        )
    if isinstance(
        exc, botocore.exceptions.EndpointConnectionError | botocore.exceptions.ConnectionClosedError
    ):
        return EventBridgeError(
            "The EventBridge endpoint could not be reached; check the network and the region.",
            code="EndpointUnreachable",
        )
    if isinstance(
        exc, botocore.exceptions.NoCredentialsError | botocore.exceptions.PartialCredentialsError
    ):
        return EventBridgeError("No AWS credentials were found for the app.", code="NoCredentials")
    return EventBridgeError("The AWS SDK failed unexpectedly; see the server log.", code="SdkError")


_SDK_ERRORS = (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError)


# All locals, and so every botocore frame below (api_params, request_dict) in an error report.
@sensitive_variables()
def _once(target, operation: str, **kwargs) -> dict:
    """One call that changes a connection, sent once: the SDK must not resend it after a
    timeout or a dropped connection (the first may have worked, and one approval makes one
    call; a lost answer is reconciled by describe_connection on retry). Only throttling, which
    AWS answers before doing anything, is retried here, with capped exponential backoff."""
    call = getattr(_client(target, "events", retries=False), operation)
    for attempt in range(settings.AWS_MAX_ATTEMPTS):
        try:
            return call(**kwargs)
        except botocore.exceptions.ClientError as exc:
            code = exc.response.get("Error", {}).get("Code")
            if code not in _THROTTLED or attempt + 1 >= settings.AWS_MAX_ATTEMPTS:
                raise translate(exc) from None
        except botocore.exceptions.BotoCoreError as exc:
            raise translate(exc) from None
        time.sleep(min(20.0, random.random() * 2**attempt))  # noqa: S311 - jitter, not crypto
    raise AssertionError("unreachable")


_THROTTLED = {"ThrottlingException", "TooManyRequestsException", "RequestLimitExceeded"}


@sensitive_variables()  # the payload holds secret values: never log it
def create_connection(target, payload: dict) -> dict:
    return _once(target, "create_connection", **payload)


@sensitive_variables()
def update_connection(target, payload: dict) -> dict:
    return _once(target, "update_connection", **payload)


def deauthorize_connection(target, name: str) -> dict:
    return _once(target, "deauthorize_connection", Name=name)


def delete_connection(target, name: str) -> dict:
    return _once(target, "delete_connection", Name=name)


def api_destinations(target, connection_arn: str) -> list[dict]:
    """Every API destination using the connection, following NextToken (botocore has no
    paginator for ListApiDestinations)."""
    found, token = [], None
    try:
        while True:
            kwargs = {"ConnectionArn": connection_arn, "Limit": 100}
            if token:
                kwargs["NextToken"] = token
            page = events_client(target).list_api_destinations(**kwargs)
            found += page.get("ApiDestinations", [])
            token = page.get("NextToken")
            if not token:
                return found
    except _SDK_ERRORS as exc:
        raise translate(exc) from None


def describe_connection(target, name: str) -> dict | None:
    """The connection, or None when there is none with that name."""
    try:
        return events_client(target).describe_connection(Name=name)
    except botocore.exceptions.ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "ResourceNotFoundException":
            return None
        raise translate(exc) from None
    except botocore.exceptions.BotoCoreError as exc:
        raise translate(exc) from None


def list_connections(target, token: str | None = None) -> tuple[list[dict], str | None]:
    """One page (100) of the target's connections, with what the list carries (state,
    StateReason, times), and the token of the next page."""
    kwargs = {"Limit": 100, **({"NextToken": token} if token else {})}
    try:
        page = events_client(target).list_connections(**kwargs)
    except _SDK_ERRORS as exc:
        raise translate(exc) from None
    return page.get("Connections", []), page.get("NextToken")


def caller_account(target) -> str:
    """The account a target's credentials act in (sts:GetCallerIdentity)."""
    try:
        return _client(target, "sts").get_caller_identity()["Account"]
    except _SDK_ERRORS as exc:
        raise translate(exc) from None


def health() -> dict:
    """Whether the EventBridge endpoint answers an authenticated call."""
    try:
        events_client().list_connections(Limit=1)
        return {"reachable": True}
    except _SDK_ERRORS as exc:
        err = translate(exc)
        return {"reachable": False, "error": err.code}


def account_id() -> str | None:
    try:
        return caller_account(None)
    except EventBridgeError:
        return None


def endpoint_url() -> str:
    return events_client().meta.endpoint_url


@functools.cache
def service_model():
    """botocore's own EventBridge model: the source of truth for validation."""
    return botocore.session.get_session().get_service_model("events")


def shape(name: str):
    return service_model().shape_for(name)
