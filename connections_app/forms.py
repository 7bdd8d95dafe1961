"""The request form: every create_connection parameter, secrets as Vault references."""

from __future__ import annotations

from urllib.parse import urlencode

from django import forms
from django.core.exceptions import ValidationError
from django.forms import formset_factory
from django.forms.utils import ErrorDict

from . import audit_review, vault
from . import document as doc
from .models import Target

TYPE_CHOICES = [
    ("BASIC", "BASIC: username and password"),
    ("OAUTH_CLIENT_CREDENTIALS", "OAUTH_CLIENT_CREDENTIALS: client ID and secret"),
    ("API_KEY", "API_KEY: API key name and value"),
]
REF_HELP = "A Vault reference: mount/path#key, optionally @version (secret/app/partner#password@3)."
MAX_ROWS = 100


def _ref_field(label: str, api: str) -> forms.CharField:
    return forms.CharField(
        label=label,
        required=False,
        max_length=1024,
        help_text=f"<code>{api}</code>. {REF_HELP}",
        widget=forms.TextInput(
            attrs={"class": "vault-ref", "autocomplete": "off", "spellcheck": "false"}
        ),
    )


def _text(label: str, api: str, help_text: str = "", **kwargs) -> forms.CharField:
    help_ = f"<code>{api}</code>. {help_text}".strip()
    return forms.CharField(label=label, required=False, help_text=help_, **kwargs)


class ConnectionRequestForm(forms.Form):
    target = forms.ModelChoiceField(
        label="Account and Region",
        queryset=Target.objects.order_by("name"),
        required=False,  # the default target when empty
        empty_label=None,
        help_text="Where the connection is made: a target registered by an administrator.",
    )
    name = _text(
        "Name", "Name", "1-64 letters, digits, “.”, “-” or “_”; unique in the account and Region."
    )
    description = _text(
        "Description", "Description", widget=forms.Textarea(attrs={"rows": 2}), max_length=2000
    )
    authorization_type = forms.ChoiceField(
        label="Authorization type",
        choices=TYPE_CHOICES,
        widget=forms.RadioSelect,
        help_text="<code>AuthorizationType</code>: how EventBridge signs in to the partner API.",
        error_messages={"required": "Choose an authorization type."},
    )
    basic_username = _text("Username", "BasicAuthParameters.Username")
    basic_password = _ref_field("Password", "BasicAuthParameters.Password")
    oauth_client_id = _text("Client ID", "ClientParameters.ClientID")
    oauth_client_secret = _ref_field("Client secret", "ClientParameters.ClientSecret")
    oauth_endpoint = _text(
        "Authorization endpoint",
        "OAuthParameters.AuthorizationEndpoint",
        "The https:// URL EventBridge calls for a token. Tokens are fetched again when the "
        "partner API answers 401 or 407.",
        max_length=4096,
    )
    oauth_http_method = forms.ChoiceField(
        label="HTTP method",
        required=False,
        choices=[("POST", "POST"), ("GET", "GET"), ("PUT", "PUT")],
        help_text="<code>OAuthParameters.HttpMethod</code>: used for the token request.",
    )
    oauth_resource_arn = _text(
        "Private authorization endpoint (resource configuration ARN)",
        "OAuthParameters.ConnectivityParameters.ResourceParameters.ResourceConfigurationArn",
        "Only for an endpoint reached through VPC Lattice; creation can then take minutes.",
    )
    apikey_name = _text(
        "API key name", "ApiKeyAuthParameters.ApiKeyName", "The header that carries the key."
    )
    apikey_value = _ref_field("API key value", "ApiKeyAuthParameters.ApiKeyValue")
    invocation_resource_arn = _text(
        "Private API (resource configuration ARN)",
        "InvocationConnectivityParameters.ResourceParameters.ResourceConfigurationArn",
        "Only when the partner API is private, reached through VPC Lattice.",
    )
    kms_key = _text(
        "KMS key identifier",
        "KmsKeyIdentifier",
        "Optional: the customer managed key for the connection's secret (ID, ARN or alias). "
        "Empty: an AWS owned key.",
    )

    SECTION_FIELDS = {
        "BASIC": ("basic_username", "basic_password"),
        "OAUTH_CLIENT_CREDENTIALS": (
            "oauth_client_id",
            "oauth_client_secret",
            "oauth_endpoint",
            "oauth_http_method",
            "oauth_resource_arn",
        ),
        "API_KEY": ("apikey_name", "apikey_value"),
    }
    REQUIRED = {
        "BASIC": ("basic_username", "basic_password"),
        "OAUTH_CLIENT_CREDENTIALS": (
            "oauth_client_id",
            "oauth_client_secret",
            "oauth_endpoint",
            "oauth_http_method",
        ),
        "API_KEY": ("apikey_name", "apikey_value"),
    }
    REF_FIELDS = ("basic_password", "oauth_client_secret", "apikey_value")

    def clean(self):
        data = super().clean()
        if not data.get("name"):
            self.add_error("name", ValidationError("Name is required.", code="required"))
        chosen = data.get("authorization_type")
        # Sections not chosen are ignored and discarded (they all post when JavaScript is off).
        for kind, fields in self.SECTION_FIELDS.items():
            if kind == chosen:
                continue
            for field in fields:
                data[field] = ""
                self.errors.pop(field, None)
        for field in self.REQUIRED.get(chosen, ()):
            if not data.get(field):
                label = self.fields[field].label
                self.add_error(field, ValidationError(f"{label} is required.", code="required"))
        for field in self.REF_FIELDS:
            if data.get(field):
                try:
                    data[field] = vault.parse_reference(data[field])
                except vault.InvalidReference as exc:
                    self.add_error(field, ValidationError(exc.message, code=exc.code))
        return data


class ParameterForm(forms.Form):
    key = forms.CharField(label="Key", required=False, max_length=2048)
    value = forms.CharField(label="Value", required=False, max_length=4096)
    is_secret = forms.BooleanField(
        label="Value is secret",
        required=False,
        help_text="Tick to give a Vault reference; EventBridge then never shows the value.",
    )

    def clean(self):
        data = super().clean()
        key, value, secret = data.get("key", ""), data.get("value", ""), data.get("is_secret")
        if not key and not value:
            return data  # an empty row is ignored
        if not key:
            self.add_error("key", ValidationError("Key is required.", code="required"))
        if not value:
            message = "Enter a Vault reference." if secret else "Value is required."
            self.add_error("value", ValidationError(message, code="required"))
            return data
        if secret:
            try:
                data["value"] = vault.parse_reference(value)
            except vault.InvalidReference as exc:
                self.add_error(
                    "value",
                    ValidationError(
                        f"This row is marked secret, so its value must be a Vault reference: "
                        f"{exc.message}",
                        code=f"secret_{exc.code}",
                    ),
                )
        elif _looks_like_reference(value):
            self.add_error(
                "value",
                ValidationError(
                    "This looks like a Vault reference: tick “Value is secret” so it is "
                    "resolved from Vault, or enter the literal value.",
                    code="reference_not_marked_secret",
                ),
            )
        return data

    def is_blank(self) -> bool:
        return not (self.cleaned_data.get("key") or self.cleaned_data.get("value"))


def _looks_like_reference(value: str) -> bool:
    try:
        vault.parse_reference(value)
    except vault.InvalidReference:
        return False
    return True


ParameterFormSet = formset_factory(
    ParameterForm, extra=1, max_num=MAX_ROWS, validate_max=True, absolute_max=MAX_ROWS + 1
)

# (prefix, document path, title)
PARAMETER_LISTS = [
    ("oauth_header", ("OAuthParameters", "OAuthHttpParameters", "HeaderParameters"), "Headers"),
    (
        "oauth_query",
        ("OAuthParameters", "OAuthHttpParameters", "QueryStringParameters"),
        "Query strings",
    ),
    ("oauth_body", ("OAuthParameters", "OAuthHttpParameters", "BodyParameters"), "Body"),
    ("inv_header", ("InvocationHttpParameters", "HeaderParameters"), "Headers"),
    ("inv_query", ("InvocationHttpParameters", "QueryStringParameters"), "Query strings"),
    ("inv_body", ("InvocationHttpParameters", "BodyParameters"), "Body"),
]
FIELD_PATHS = {
    "Name": "name",
    "Description": "description",
    "AuthorizationType": "authorization_type",
    "KmsKeyIdentifier": "kms_key",
    "AuthParameters.BasicAuthParameters.Username": "basic_username",
    "AuthParameters.BasicAuthParameters.Password": "basic_password",
    "AuthParameters.BasicAuthParameters": "authorization_type",
    "AuthParameters.OAuthParameters": "authorization_type",
    "AuthParameters.ApiKeyAuthParameters": "authorization_type",
    "AuthParameters.OAuthParameters.ClientParameters.ClientID": "oauth_client_id",
    "AuthParameters.OAuthParameters.ClientParameters.ClientSecret": "oauth_client_secret",
    "AuthParameters.OAuthParameters.AuthorizationEndpoint": "oauth_endpoint",
    "AuthParameters.OAuthParameters.HttpMethod": "oauth_http_method",
    # A private OAuth endpoint's connectivity sits beside OAuthParameters, not inside it.
    "AuthParameters.ConnectivityParameters.ResourceParameters.ResourceConfigurationArn": (
        "oauth_resource_arn"
    ),
    "AuthParameters.ApiKeyAuthParameters.ApiKeyName": "apikey_name",
    "AuthParameters.ApiKeyAuthParameters.ApiKeyValue": "apikey_value",
    "InvocationConnectivityParameters.ResourceParameters.ResourceConfigurationArn": (
        "invocation_resource_arn"
    ),
}


class RequestForms:
    """The main form and its six parameter formsets, validated and converted as one unit."""

    max_rows = MAX_ROWS

    @classmethod
    def with_row_added(cls, data, prefix: str, **kwargs) -> RequestForms:
        """The no-JavaScript "Add row": the form as posted, with one more empty row under
        `prefix` (up to MAX_ROWS), shown without errors."""
        data = data.copy()
        key = f"{prefix}-TOTAL_FORMS"
        if any(prefix == known for known, _, _ in PARAMETER_LISTS) and key in data:
            raw = data[key]  # few digits only: int() refuses more than 4,300 (a 500)
            count = int(raw) if raw.isdecimal() and raw.isascii() and len(raw) < 10 else MAX_ROWS
            data[key] = str(min(count + 1, MAX_ROWS))
        forms = cls(data, **kwargs)
        forms.suppress_errors()
        return forms

    def __init__(
        self, data=None, *, initial: dict | None = None, fixed_name: str = "", new: bool = False
    ):
        """`fixed_name`: the form of an update, whose connection keeps its name; `new`: a new
        connection, whose target is chosen here."""
        initial = initial or {}
        form_initial = dict(initial.get("form") or {})
        if fixed_name:
            form_initial["name"] = fixed_name
        self.form = ConnectionRequestForm(data, initial=form_initial)
        if new:
            self.form.fields["target"].initial = Target.default().pk
        else:
            del self.form.fields["target"]  # a connection, or a request, stays where it is
        if fixed_name:
            self.form.fields["name"].disabled = True
            self.form.fields["name"].help_text = "A connection's name cannot change."
        self.formsets = {
            prefix: ParameterFormSet(data, prefix=prefix, initial=initial.get(prefix))
            for prefix, _, _ in PARAMETER_LISTS
        }
        self._row_map: dict[str, tuple[str, int]] = {}

    def is_valid(self) -> bool:
        valid = self.form.is_valid()
        chosen = getattr(self.form, "cleaned_data", {}).get("authorization_type")
        for prefix, formset in self.formsets.items():
            if prefix.startswith("oauth_") and chosen != "OAUTH_CLIENT_CREDENTIALS":
                continue  # a section not chosen is discarded, rows included
            valid = formset.is_valid() and valid
        return valid

    def list_sections(self):
        return [(prefix, title, self.formsets[prefix]) for prefix, _, title in PARAMETER_LISTS]

    def to_document(self) -> dict:
        """The request document. With errors on the form: built from what did clean (the rest
        left blank), so that the document's own checks can still be run on it."""
        data = self.form.cleaned_data
        kind = data.get("authorization_type", "")
        document: dict = {"Name": data.get("name", ""), "AuthorizationType": kind}
        if data.get("description"):
            document["Description"] = data["description"]
        auth: dict = {}
        if kind == "BASIC":
            auth["BasicAuthParameters"] = {
                "Username": data.get("basic_username", ""),
                "Password": _leaf(data.get("basic_password")),
            }
        elif kind == "API_KEY":
            auth["ApiKeyAuthParameters"] = {
                "ApiKeyName": data.get("apikey_name", ""),
                "ApiKeyValue": _leaf(data.get("apikey_value")),
            }
        elif kind:
            oauth = {
                "ClientParameters": {
                    "ClientID": data.get("oauth_client_id", ""),
                    "ClientSecret": _leaf(data.get("oauth_client_secret")),
                },
                "AuthorizationEndpoint": data.get("oauth_endpoint", ""),
                "HttpMethod": data.get("oauth_http_method", ""),
            }
            auth["OAuthParameters"] = oauth
            if data.get("oauth_resource_arn"):
                # The model puts a private authorization endpoint's connectivity in
                # AuthParameters.ConnectivityParameters, beside OAuthParameters.
                auth["ConnectivityParameters"] = {
                    "ResourceParameters": {"ResourceConfigurationArn": data["oauth_resource_arn"]}
                }
        for prefix, path, _ in PARAMETER_LISTS:
            if prefix.startswith("oauth_") and kind != "OAUTH_CLIENT_CREDENTIALS":
                continue
            rows = []
            for index, row in enumerate(self.formsets[prefix].forms):
                if not row.cleaned_data or row.errors or row.is_blank():
                    continue
                doc_path = "AuthParameters." + ".".join(path) + f"[{len(rows)}]"
                self._row_map[doc_path] = (prefix, index)
                rows.append(
                    {
                        "Key": row.cleaned_data["key"],
                        "Value": _leaf(row.cleaned_data["value"]),
                        "IsValueSecret": bool(row.cleaned_data["is_secret"]),
                    }
                )
            if rows:
                node = auth
                for part in path[:-1]:
                    node = node.setdefault(part, {})
                node[path[-1]] = rows
        document["AuthParameters"] = auth
        if data.get("invocation_resource_arn"):
            document["InvocationConnectivityParameters"] = {
                "ResourceParameters": {"ResourceConfigurationArn": data["invocation_resource_arn"]}
            }
        if data.get("kms_key"):
            document["KmsKeyIdentifier"] = data["kms_key"]
        return document

    def add_issues(self, issues: list[doc.Issue], *, beside_errors: bool = True) -> None:
        """Put each document problem next to the field it is about (`beside_errors` False: not
        where the field already shows an error of its own)."""
        for issue in issues:
            error = ValidationError(issue.message, code=issue.code)
            path = issue.path
            if path.startswith("AuthParameters.") and "Parameters[" in path:
                row_path, _, leaf = path.rpartition(".")
                if row_path in self._row_map and leaf in ("Key", "Value"):
                    prefix, index = self._row_map[row_path]
                    self._add(
                        self.formsets[prefix].forms[index], leaf.lower(), error, beside_errors
                    )
                    continue
                list_path = path.split("[")[0]
                for prefix, lpath, _ in PARAMETER_LISTS:
                    if list_path.endswith(".".join(lpath)):
                        formset = self.formsets[prefix]
                        if beside_errors or not formset.non_form_errors():
                            formset._non_form_errors = formset.error_class([error.message])
                        break
                else:
                    self._add(self.form, None, error, beside_errors)
                continue
            if path.startswith("InvocationHttpParameters") or path.endswith("Parameters"):
                self._add(self.form, None, error, beside_errors)
                continue
            self._add(self.form, FIELD_PATHS.get(path), error, beside_errors)

    @staticmethod
    def _add(form, field, error, beside_errors: bool) -> None:
        if beside_errors or not form.has_error(field or "__all__"):
            form.add_error(field, error)

    def has_errors(self) -> bool:
        return bool(self.form.errors) or any(
            formset.total_error_count() for formset in self.formsets.values()
        )

    def suppress_errors(self) -> None:
        """Render what was entered without validating it (the no-JavaScript Check)."""
        self.form._errors = ErrorDict(renderer=self.form.renderer)
        self.form.cleaned_data = {}
        for formset in self.formsets.values():
            formset._non_form_errors = formset.error_class(
                error_class="nonform", renderer=formset.renderer
            )
            formset._errors = []
            for row in formset.forms:
                row._errors = ErrorDict(renderer=row.renderer)
                row.cleaned_data = {}


def _leaf(value):
    """A parsed reference as the document stores it; anything else (plain text) as it is."""
    return value.leaf if isinstance(value, vault.Reference) else (value or "")


def initial_from_document(document: dict) -> dict:
    """Form and formset initial data from a stored document (for editing)."""
    auth = document.get("AuthParameters", {})
    basic = auth.get("BasicAuthParameters", {})
    oauth = auth.get("OAuthParameters", {})
    client = oauth.get("ClientParameters", {})
    apikey = auth.get("ApiKeyAuthParameters", {})

    def ref(leaf):
        return str(vault.Reference.from_leaf(leaf)) if doc.is_reference(leaf) else ""

    def arn(node):
        return node.get("ResourceParameters", {}).get("ResourceConfigurationArn", "")

    form = {
        "name": document.get("Name", ""),
        "description": document.get("Description", ""),
        "authorization_type": document.get("AuthorizationType"),
        "basic_username": basic.get("Username", ""),
        "basic_password": ref(basic.get("Password")),
        "oauth_client_id": client.get("ClientID", ""),
        "oauth_client_secret": ref(client.get("ClientSecret")),
        "oauth_endpoint": oauth.get("AuthorizationEndpoint", ""),
        "oauth_http_method": oauth.get("HttpMethod", "POST"),
        "oauth_resource_arn": arn(auth.get("ConnectivityParameters", {})),
        "apikey_name": apikey.get("ApiKeyName", ""),
        "apikey_value": ref(apikey.get("ApiKeyValue")),
        "invocation_resource_arn": arn(document.get("InvocationConnectivityParameters", {})),
        "kms_key": document.get("KmsKeyIdentifier", ""),
    }
    initial = {"form": form}
    for prefix, path, _ in PARAMETER_LISTS:
        node = auth
        for part in path:
            node = node.get(part, {}) if isinstance(node, dict) else {}
        rows = node if isinstance(node, list) else []
        initial[prefix] = [
            {
                "key": row.get("Key", ""),
                "value": ref(row["Value"]) if row.get("IsValueSecret") else row.get("Value", ""),
                "is_secret": bool(row.get("IsValueSecret")),
            }
            for row in rows
        ]
    return initial


class ReasonForm(forms.Form):
    """Deauthorize (a reason is required) and delete (optional)."""

    reason = forms.CharField(
        label="Reason",
        required=False,
        max_length=2000,
        widget=forms.Textarea(attrs={"rows": 3}),
        error_messages={"max_length": "At most %(limit_value)d characters."},
    )

    def __init__(self, *args, required: bool, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["reason"].required = required
        self.fields["reason"].error_messages["required"] = "Say why."


class RotateForm(forms.Form):
    """One optional version per secret of the connection; empty: the newest Vault has."""

    def __init__(self, *args, secrets: list[dict], **kwargs):
        super().__init__(*args, **kwargs)
        self.secrets = secrets
        for i, secret in enumerate(secrets):
            secret["field"] = f"version_{i}"
            self.fields[secret["field"]] = forms.IntegerField(
                label=f"Version of {secret['reference']}",
                required=False,
                min_value=1,
                max_value=2**63 - 1,
                help_text="Empty: the newest version.",
                disabled=secret.get("kv_version") == 1,  # KV v1 keeps no versions
            )

    def versions(self) -> dict[str, int | None]:
        return {s["path"]: self.cleaned_data.get(s["field"]) for s in self.secrets}


# ---------------------------------------------------------------------------
# Audit review


class AuditFilterForm(forms.Form):
    """The audit log's filters (exact matches, whole UTC days) and its keyset cursor.

    audit_list.html writes the inputs out itself: widgets rendered through templates cost more
    than the whole table of events.
    """

    actor = forms.CharField(required=False, max_length=150)
    action = forms.CharField(required=False, max_length=64)
    connection = forms.CharField(required=False, max_length=64)
    outcome = forms.ChoiceField(
        required=False,
        choices=[("", "any"), *zip(audit_review.OUTCOMES, audit_review.OUTCOMES, strict=True)],
    )
    arn = forms.CharField(required=False, max_length=1600)
    since = forms.DateField(required=False)
    until = forms.DateField(required=False)
    before = forms.IntegerField(required=False, min_value=1, max_value=2**63 - 1)
    after = forms.IntegerField(required=False, min_value=0, max_value=2**63 - 1)

    FILTERS = {
        "actor": "actor_username",
        "action": "action",
        "connection": "connection_name",
        "outcome": "outcome",
        "arn": "arn",
        "since": "since",
        "until": "until",
    }

    def clean(self):
        data = super().clean()
        if data.get("since") and data.get("until") and data["since"] > data["until"]:
            self.add_error("until", "The last day comes before the first.")
        if data.get("before") is not None and data.get("after") is not None:
            raise forms.ValidationError("A page link has either “before” or “after”, not both.")
        return data

    def filters(self) -> dict:
        return {
            arg: self.cleaned_data[f] for f, arg in self.FILTERS.items() if self.cleaned_data[f]
        }

    def query(self) -> str:
        """The filters as a query string (no cursor), for page and export links."""
        return urlencode({f: self.data[f] for f in self.FILTERS if self.data.get(f)})


class SecretUseForm(forms.Form):
    fingerprint = forms.RegexField(
        required=False,
        regex=r"^hmac-sha256:[0-9a-f]{64}$",
        error_messages={"invalid": "A fingerprint is hmac-sha256: and 64 hex digits."},
    )
    reference = forms.CharField(required=False, max_length=1024)
    before = forms.IntegerField(required=False, min_value=1, max_value=2**63 - 1)

    def clean(self):
        data = super().clean()
        data["version"] = None
        if data.get("reference"):  # as request pages show it: mount/path#key, maybe @version
            try:
                ref = vault.parse_reference(data["reference"])
            except vault.InvalidReference as exc:
                self.add_error("reference", exc.message)
            else:
                data["reference"], data["version"] = ref.secret, ref.version
        if not self.errors and bool(data.get("fingerprint")) == bool(data.get("reference")):
            raise forms.ValidationError("Give either a fingerprint or a Vault reference.")
        return data
