"""The request document: create_connection's own shape, with a Vault reference at each secret leaf.

validate() checks it against botocore's EventBridge model (read at run time), resolve() turns it
into the real kwargs for one call, redact() into the copy the audit log keeps.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit

from django.conf import settings
from django.views.decorators.debug import sensitive_variables

from . import eventbridge, vault

AUTH_SECTIONS = {
    "BASIC": "BasicAuthParameters",
    "OAUTH_CLIENT_CREDENTIALS": "OAuthParameters",
    "API_KEY": "ApiKeyAuthParameters",
}
PARAMETER_LISTS = ("HeaderParameters", "QueryStringParameters", "BodyParameters")
# Secret leaves that are always references (DESIGN.md); parameter Values are by IsValueSecret.
ALWAYS_SECRET = ("Password", "ClientSecret", "ApiKeyValue")
MAX_PAYLOAD_BYTES = 64 * 1024
# Room kept in Description for the marker that lets a retry recognise its own connection.
MARKER_ROOM = len(" [eb-request:0123456789abcdef]")

LABELS = {
    "Name": "Name",
    "Description": "Description",
    "AuthorizationType": "Authorization type",
    "Username": "Username",
    "Password": "Password",
    "ClientID": "Client ID",
    "ClientSecret": "Client secret",
    "AuthorizationEndpoint": "Authorization endpoint",
    "HttpMethod": "HTTP method",
    "ApiKeyName": "API key name",
    "ApiKeyValue": "API key value",
    "KmsKeyIdentifier": "KMS key identifier",
    "ResourceConfigurationArn": "Resource configuration ARN",
    "Key": "Key",
    "Value": "Value",
}


@dataclass(frozen=True)
class Issue:
    path: str  # dotted path into the document, list rows as [i]
    code: str
    message: str


def is_reference(value) -> bool:
    """A secret leaf: a Vault reference, redacted or not ({"vault": ..., ...})."""
    return isinstance(value, dict) and "vault" in value


def canonical_json(value) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def document_hash(document: dict) -> str:
    """SHA-256 of the canonical document, references included: what an approval is bound to."""
    return hashlib.sha256(canonical_json(document).encode()).hexdigest()


@sensitive_variables()
def fingerprint(value: str) -> str:
    """HMAC-SHA256 keyed by AUDIT_HMAC_KEY: shows a secret changed without revealing it."""
    digest = hmac.new(settings.AUDIT_HMAC_KEY.encode(), value.encode(), hashlib.sha256)
    return f"hmac-sha256:{digest.hexdigest()}"


# ---------------------------------------------------------------------------
# Walking a document


def secret_leaves(document) -> list[tuple[tuple, dict]]:
    """(path, leaf) for every secret leaf of a document (a reference, redacted or not), in a
    stable order. Only dicts and lists are walked into: verifying the audit's secret-use index
    runs this once per event."""
    found = []

    def walk(node, path):
        if isinstance(node, dict):
            if is_reference(node):
                found.append((path, node))
                return
            items = [(key, node[key]) for key in sorted(node)]
        else:
            items = enumerate(node)
        for key, value in items:
            if isinstance(value, dict | list):
                walk(value, (*path, key))

    walk(document, ())
    return found


def references(document: dict) -> list[tuple[tuple, vault.Reference]]:
    """(path, Reference) for every secret leaf of a stored (valid) document: the one place a
    stored reference is parsed; everything after it passes the Reference on."""
    return [(path, vault.Reference.from_leaf(leaf)) for path, leaf in secret_leaves(document)]


def unredacted(document: dict) -> dict:
    """A redacted document (the audit copy, a connection's pushed document) as a request
    document again: each secret leaf back to its reference at the version it names."""
    copy_ = copy.deepcopy(document)
    for path, leaf in secret_leaves(document):
        replace(copy_, path, {"vault": leaf["vault"], "version": leaf.get("version")})
    return copy_


def path_text(path: tuple) -> str:
    """("A", "B", 0, "C") -> "A.B[0].C", as flatten() writes paths."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


def flatten(node, path: str = "") -> Iterator[tuple[str, object]]:
    """(path, leaf) pairs of a document; a secret leaf counts as one leaf."""
    if isinstance(node, dict) and not is_reference(node):
        for key in sorted(node):
            yield from flatten(node[key], f"{path}.{key}" if path else key)
    elif isinstance(node, list):
        for i, item in enumerate(node):
            yield from flatten(item, f"{path}[{i}]")
    else:
        yield path, node


def replace(document: dict, path: tuple, value) -> None:
    node = document
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value


# ---------------------------------------------------------------------------
# Validation against the service model


# The model's patterns are written for AWS's regex engine. Two of them nest overlapping
# quantifiers and backtrack exponentially in Python's re (a Username of "a", thirty spaces and
# ":" takes minutes), so each is replaced by a linear pattern that accepts exactly the same
# strings (tests/test_document.py checks the equivalence). HeaderKey's "+-." is a range that
# also lets "," through, which is not an HTTP token character (RFC 9110 tchar). A pattern that
# a newer botocore changes is used as it comes.
_SAFE_PATTERNS = {
    r"^[ \t]*[^\x00-\x1F:\x7F]+([ \t]+[^\x00-\x1F:\x7F]+)*[ \t]*$": (
        r"\t*[^\x00-\x1F:\x7F][^\x00-\x08\x0A-\x1F:\x7F]*"
    ),
    r"^[ \t]*[\x20-\x7E]+([ \t]+[\x20-\x7E]+)*[ \t]*$": r"\t*[\x20-\x7E][\x20-\x7E\t]*",
    r"^[!#$%&'*+-.^_`|~0-9a-zA-Z]+$": r"[!#$%&'*+\-.^_`|~0-9a-zA-Z]+",
}


def pattern_matches(pattern: str, value: str) -> bool:
    """Does `value` satisfy a model pattern (in linear time for the patterns above)?"""
    return re.fullmatch(_SAFE_PATTERNS.get(pattern, pattern), value, flags=re.DOTALL) is not None


def _label(path: str) -> str:
    """The form's word for the field a document path ends in."""
    return LABELS.get(path.rsplit(".", 1)[-1].split("[")[0], path)


def _check_string(shape, value: str, path: str, issues: list[Issue]) -> None:
    label = _label(path)
    meta = shape.metadata
    if "min" in meta and len(value) < meta["min"]:
        issues.append(Issue(path, "required", f"{label} is required."))
        return
    if "max" in meta and len(value) > meta["max"]:
        issues.append(Issue(path, "too_long", f"{label} must be at most {meta['max']} characters."))
        return
    enum = getattr(shape, "enum", None)
    if enum and value not in enum:
        issues.append(Issue(path, "invalid_choice", f"{label} must be one of {', '.join(enum)}."))
        return
    pattern = meta.get("pattern")
    if pattern and value and not pattern_matches(pattern, value):
        issues.append(Issue(path, "invalid_characters", _pattern_message(shape.name, label)))


def _pattern_message(shape_name: str, label: str) -> str:
    return {
        "ConnectionName": "Use only letters, digits, “.”, “-” and “_”.",
        "AuthHeaderParameters": f"{label} may not contain control characters or “:”.",
        "HeaderKey": "A header name is an HTTP token: letters, digits and !#$%&'*+-.^_`|~ only.",
        "HeaderValueSensitive": "A header value may hold printable ASCII characters only.",
        "QueryStringKey": "A query-string key may not contain control characters.",
        "QueryStringValueSensitive": "A query-string value may not contain control characters.",
        "HttpsEndpoint": "Enter a URL with only URL-safe characters (percent-encode the rest).",
        "KmsKeyIdentifier": "Use a key ID, key ARN, alias name or alias ARN.",
        "ResourceConfigurationArn": "Enter a VPC Lattice resource configuration ARN.",
    }.get(shape_name, f"{label} has characters AWS does not accept.")


def _walk(shape, value, path: str, issues: list[Issue], secret: bool) -> None:
    label = _label(path)
    if secret:
        if not is_reference(value):
            issues.append(
                Issue(path, "secret_not_reference", f"{label} must be a Vault reference.")
            )
            return
        problem = _reference_problem(value)
        if problem:
            issues.append(Issue(path, *problem))
        return
    if is_reference(value):
        issues.append(Issue(path, "reference_not_secret", f"{label} takes a plain value."))
        return
    kind = shape.type_name
    if kind == "structure":
        if not isinstance(value, dict):
            issues.append(Issue(path, "invalid", f"{label} must be an object."))
            return
        for extra in sorted(set(value) - set(shape.members)):
            issues.append(Issue(_join(path, extra), "unknown_field", f"Unknown field {extra}."))
        for name in shape.required_members:
            if name not in value:
                member_label = LABELS.get(name, name)
                issues.append(Issue(_join(path, name), "required", f"{member_label} is required."))
        for name, member in shape.members.items():
            if name not in value:
                continue
            child_secret = name in ALWAYS_SECRET or (
                name == "Value" and bool(value.get("IsValueSecret"))
            )
            _walk(member, value[name], _join(path, name), issues, child_secret)
    elif kind == "list":
        if not isinstance(value, list):
            issues.append(Issue(path, "invalid", f"{label} must be a list."))
            return
        limit = shape.metadata.get("max")
        if limit is not None and len(value) > limit:
            issues.append(Issue(path, "too_many", f"At most {limit} parameters per list."))
            return
        for i, item in enumerate(value):
            _walk(shape.member, item, f"{path}[{i}]", issues, False)
    elif kind == "boolean":
        if not isinstance(value, bool):
            issues.append(Issue(path, "invalid", f"{label} must be true or false."))
    elif kind == "string":
        if not isinstance(value, str):
            issues.append(Issue(path, "invalid", f"{label} must be text."))
            return
        found = len(issues)
        _check_string(shape, value, path, issues)
        # Fields without a pattern take anything, but PostgreSQL's jsonb cannot store NUL.
        if len(issues) == found and "\x00" in value:
            issues.append(
                Issue(path, "null_characters_not_allowed", f"{label} may not contain NUL.")
            )


def _reference_problem(leaf: dict) -> tuple[str, str] | None:
    """(code, message) when a reference leaf is not exactly {"vault": text, "version": n}."""
    # Anything else beside the reference (a "value", say) would be stored in the database.
    if set(leaf) - {"vault", "version"}:
        return "invalid_reference", "A Vault reference holds only “vault” and “version”."
    text, version = leaf["vault"], leaf.get("version")
    if not isinstance(text, str):
        return "invalid_reference", "A Vault reference is text: mount/path#key."
    if version is not None and (
        isinstance(version, bool) or not isinstance(version, int) or version < 1
    ):
        return "bad_version", "A reference's version is a whole number from 1."
    try:
        ref = vault.parse_reference(text)
    except vault.InvalidReference as exc:
        return exc.code, exc.message
    if ref.version is not None:
        return "invalid_reference", "Give a reference's version in “version”, not after “@”."
    return None


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def validate(document: dict) -> list[Issue]:
    """Every problem the service model (and what the model leaves out) can find, by field."""
    shape = eventbridge.service_model().operation_model("CreateConnection").input_shape
    issues: list[Issue] = []
    _walk(shape, document, "", issues, False)
    if not isinstance(document, dict):
        return issues

    auth_type = document.get("AuthorizationType")
    auth = document.get("AuthParameters")
    # A non-string type (a dict, say) is already an issue above, and is unhashable here.
    if isinstance(auth, dict) and isinstance(auth_type, str) and auth_type in AUTH_SECTIONS:
        wanted = AUTH_SECTIONS[auth_type]
        if wanted not in auth:
            issues.append(
                Issue(f"AuthParameters.{wanted}", "required", f"{auth_type} needs its section.")
            )
        for other in set(AUTH_SECTIONS.values()) - {wanted}:
            if other in auth:
                issues.append(
                    Issue(
                        f"AuthParameters.{other}",
                        "section_not_chosen",
                        f"{other} does not belong to {auth_type}.",
                    )
                )
        oauth = auth.get("OAuthParameters")
        if auth_type == "OAUTH_CLIENT_CREDENTIALS" and isinstance(oauth, dict):
            endpoint = oauth.get("AuthorizationEndpoint")
            if isinstance(endpoint, str) and endpoint:
                try:
                    parts = urlsplit(endpoint)
                    https = parts.scheme == "https" and bool(parts.netloc)
                except ValueError:  # e.g. "https://[::1": not a URL at all
                    https = False
                if not https:
                    issues.append(
                        Issue(
                            "AuthParameters.OAuthParameters.AuthorizationEndpoint",
                            "not_https",
                            "The authorization endpoint must be an https:// URL.",
                        )
                    )
    description = document.get("Description")
    if isinstance(description, str) and len(description) > 512 - MARKER_ROOM:
        issues.append(
            Issue(
                "Description",
                "too_long",
                f"Description must be at most {512 - MARKER_ROOM} characters "
                "(the rest is kept for the request marker).",
            )
        )
    if estimated_size(document) >= MAX_PAYLOAD_BYTES:
        issues.append(
            Issue(
                "",
                "payload_too_large",
                "The request would exceed EventBridge's 64 KB limit; use fewer or shorter "
                "parameters.",
            )
        )
    return _dedupe(issues)


def _dedupe(issues: list[Issue]) -> list[Issue]:
    seen, out = set(), []
    for issue in issues:
        if (issue.path, issue.code) not in seen:
            seen.add((issue.path, issue.code))
            out.append(issue)
    return out


def estimated_size(document: dict) -> int:
    """Bytes of the JSON payload, counting each secret at its largest allowed size (512)."""
    draft = copy.deepcopy(document)
    for path, _ in list(secret_leaves(draft)):
        replace(draft, path, "x" * 512)
    return len(json.dumps(draft, separators=(",", ":")).encode()) + MARKER_ROOM


# ---------------------------------------------------------------------------
# Comparing with AWS, and updating

# The marker a request adds to Description (services: ConnectionRequest.marker).
_MARKER = re.compile(r"\s*\[eb-request:[0-9a-f]{16}\]$")
_LISTS = ("HeaderParameters", "QueryStringParameters", "BodyParameters")


def without_marker(description: str) -> str:
    return _MARKER.sub("", description or "")


def comparable(document: dict) -> dict:
    """The plain part of a document, or of a describe_connection answer, in one shape: the
    create_connection fields only, no secret (reference or value: AWS never returns one, an
    emulator may), and no request marker in Description. Never stored: for diffs on a page."""
    members = eventbridge.service_model().operation_model("CreateConnection").input_shape.members
    out = {key: copy.deepcopy(value) for key, value in document.items() if key in members}
    if "Description" in out:
        out["Description"] = without_marker(out["Description"])
        if not out["Description"]:
            del out["Description"]

    def strip(node):
        if isinstance(node, dict):
            if node.get("IsValueSecret"):
                node.pop("Value", None)
            for key in [k for k in node if k in ALWAYS_SECRET]:
                del node[key]
            for value in node.values():
                strip(value)
        elif isinstance(node, list):
            for item in node:
                strip(item)

    strip(out)
    return out


def for_update(payload: dict, previous: dict) -> dict:
    """update_connection's kwargs from a whole (resolved) document. AWS keeps what an update
    leaves out, so a parameter list the previous document had and this one lacks is sent
    empty, which clears it."""
    out = dict(payload)
    auth = out.setdefault("AuthParameters", {})
    before = previous.get("AuthParameters") or {}
    places = [("InvocationHttpParameters",)]
    if out.get("AuthorizationType") == "OAUTH_CLIENT_CREDENTIALS":
        places.append(("OAuthParameters", "OAuthHttpParameters"))
    for place in places:
        old = before
        for part in place:
            old = old.get(part) or {}
        for name in _LISTS:
            if old.get(name):
                node = auth
                for part in place:
                    node = node.setdefault(part, {})
                node.setdefault(name, [])
    return out


# ---------------------------------------------------------------------------
# Resolution and redaction


@sensitive_variables()  # the payload, filled with values
def resolve(
    document: dict,
    read_all: Callable[[list[vault.Reference]], dict[vault.Reference, vault.Resolution]],
    *,
    marker: str = "",
) -> tuple[dict, dict[tuple, vault.Resolution]]:
    """The create_connection kwargs with real values: in memory, for one call only."""
    payload = copy.deepcopy(document)
    refs = references(document)
    read = read_all(list(dict.fromkeys(ref for _, ref in refs)))
    resolutions = {path: read[ref] for path, ref in refs}
    for path, resolution in resolutions.items():
        replace(payload, path, resolution.value)
    if marker:
        description = payload.get("Description", "")
        payload["Description"] = f"{description} {marker}".strip()
    return payload, resolutions


@sensitive_variables()  # fingerprinting holds each value
def redact(document: dict, resolutions: dict[tuple, vault.Resolution] | None = None) -> dict:
    """The audit copy: each secret leaf as reference, version read and keyed fingerprint."""
    copy_ = copy.deepcopy(document)
    for path, leaf in secret_leaves(document):
        entry = {"vault": leaf["vault"], "version": leaf.get("version"), "redacted": True}
        resolution = (resolutions or {}).get(path)
        if resolution is not None:
            entry["version"] = resolution.info.version
            entry["fingerprint"] = fingerprint(resolution.value)
        replace(copy_, path, entry)
    return copy_


def _shape_at(path: tuple):
    shape = eventbridge.service_model().operation_model("CreateConnection").input_shape
    for part in path:
        shape = shape.member if isinstance(part, int) else shape.members[part]
    return shape


@sensitive_variables()
def check_values(payload: dict, resolutions: dict[tuple, vault.Resolution]) -> list[str]:
    """Resolved values against the model's rules; messages name the reference, never the value."""
    problems = []
    for path, resolution in resolutions.items():
        issues: list[Issue] = []
        _check_string(_shape_at(path), resolution.value, path_text(path), issues)
        for issue in issues:
            info = resolution.info
            version = f" (version {info.version})" if info.version else ""
            problems.append(
                f"The value of {info.reference.path}#{info.reference.key}{version} does not "
                f"fit {path_text(path)}: {issue.code.replace('_', ' ')}."
            )
    if len(json.dumps(payload, separators=(",", ":")).encode()) >= MAX_PAYLOAD_BYTES:
        problems.append("With the secrets filled in, the request exceeds the 64 KB limit.")
    return problems
