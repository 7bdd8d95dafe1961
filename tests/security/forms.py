"""The request form's POST, as a browser with JavaScript off sends it, for the security tests."""

from __future__ import annotations

# The references the sweep's forms use, per authorization type (see conftest.SWEEP_SECRETS).
MAIN_REF = {
    "BASIC": ("basic_password", "secret/sweep/basic#password"),
    "OAUTH_CLIENT_CREDENTIALS": ("oauth_client_secret", "secret/sweep/oauth#client_secret"),
    "API_KEY": ("apikey_value", "secret/sweep/apikey#api_key"),
}
PARAM_REFS = {"header": "secret/sweep/params#header", "query": "secret/sweep/params#query",
              "body": "secret/sweep/params#body"}  # fmt: skip
PREFIXES = ["oauth_header", "oauth_query", "oauth_body", "inv_header", "inv_query", "inv_body"]


def form(
    kind: str,
    name: str,
    *,
    main_ref: str | None = None,
    description: str = "sweep",
    rows: dict | None = None,
    **fields: str,
) -> dict:
    """The POST of the request form, with a secret row in every parameter list of the type.

    `rows` (prefix -> [(key, value, secret)]) replaces those lists; `fields` override fields.
    """
    data = {
        "name": name, "description": description, "authorization_type": kind,
        "basic_username": "alice", "oauth_client_id": "client-1",
        "oauth_endpoint": "https://auth.example.com/oauth2/token", "oauth_http_method": "POST",
        "apikey_name": "x-api-key", "kms_key": "", "oauth_resource_arn": "",
        "invocation_resource_arn": "", "_save": "",
    }  # fmt: skip
    field, ref = MAIN_REF[kind]
    data[field] = main_ref or ref
    default_rows = {
        "inv_header": [("X-Token", PARAM_REFS["header"], True), ("X-Plain", "plain", False)],
        "inv_query": [("token", PARAM_REFS["query"], True)],
        "inv_body": [("secret", PARAM_REFS["body"], True)],
    }
    if kind == "OAUTH_CLIENT_CREDENTIALS":
        default_rows |= {
            "oauth_header": [("X-Oauth", PARAM_REFS["header"], True)],
            "oauth_query": [("aud", PARAM_REFS["query"], True)],
            "oauth_body": [("grant_type", "client_credentials", False),
                           ("assertion", PARAM_REFS["body"], True)],
        }  # fmt: skip
    rows = default_rows | (rows or {})
    for prefix in PREFIXES:
        items = rows.get(prefix, [])
        data |= {f"{prefix}-TOTAL_FORMS": str(len(items)), f"{prefix}-INITIAL_FORMS": "0"}
        for i, (key, value, secret) in enumerate(items):
            data |= {f"{prefix}-{i}-key": key, f"{prefix}-{i}-value": value}
            if secret:
                data[f"{prefix}-{i}-is_secret"] = "on"
    return data | fields


def refs_of(data: dict) -> list[str]:
    refs = [v for k, v in data.items() if k in ("basic_password", "oauth_client_secret",
                                                   "apikey_value") and v]  # fmt: skip
    refs += [data[k.replace("is_secret", "value")] for k in data if k.endswith("is_secret")]
    return refs
