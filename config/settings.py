"""Settings from the environment (django-environ); secrets have no defaults outside DEBUG."""

import ipaddress
import json
from datetime import timedelta
from pathlib import Path

import environ
from csp.constants import NONE, SELF
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent
env = environ.Env()

DEBUG = env.bool("DEBUG", default=False)

_GENERATE = "generate each with: python -c 'import secrets; print(secrets.token_urlsafe(50))'"
_missing = [name for name in ("SECRET_KEY", "AUDIT_HMAC_KEY") if not env.str(name, default="")]
if _missing and not DEBUG:
    raise ImproperlyConfigured(
        f"{' and '.join(_missing)} must be set when DEBUG is off ({_GENERATE})."
    )
_short = [n for n in ("SECRET_KEY", "AUDIT_HMAC_KEY") if len(env.str(n, default="").encode()) < 32]
if _short and not DEBUG:  # a short key can be guessed offline from one signed cookie
    raise ImproperlyConfigured(f"{' and '.join(_short)} must be at least 32 bytes ({_GENERATE}).")
# Development-only fallbacks: DEBUG is on, so nothing real is protected by them.
SECRET_KEY = env.str("SECRET_KEY", default="") or "dev-only-insecure-secret-key-debug-only"
# Keys the audit fingerprints; deliberately not SECRET_KEY (as Vault's audit devices do).
AUDIT_HMAC_KEY = env.str("AUDIT_HMAC_KEY", default="") or "dev-only-insecure-audit-key-debug-only"
if AUDIT_HMAC_KEY == SECRET_KEY:
    # Whoever rotates or leaks one must not have changed or leaked the other.
    raise ImproperlyConfigured("AUDIT_HMAC_KEY must differ from SECRET_KEY.")

ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "csp",
    "axes",
    "django_q",
    "connections_app",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # Re-checks single sign-on sessions with the identity provider (a no-op while OIDC is off).
    "connections_app.oidc.SessionRefresh",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "csp.middleware.CSPMiddleware",
    "axes.middleware.AxesMiddleware",  # last, as axes asks
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "connections_app.roles.navigation",
            ],
        },
    },
]

DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}")}
DATABASES["default"]["ATOMIC_REQUESTS"] = False
# Reuse connections across requests (checked before reuse): opening one costs more than a page.
DATABASES["default"].setdefault("CONN_MAX_AGE", env.int("CONN_MAX_AGE", default=60))
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # BEGIN IMMEDIATE: a transaction takes the write lock when it starts, so that two of them
    # never both read a row and then both change it (SQLite has no SELECT ... FOR UPDATE).
    # WAL lets pages read while one transaction writes.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        transaction_mode="IMMEDIATE", timeout=20, init_command="PRAGMA journal_mode=WAL"
    )
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql" and env.bool(
    "DATABASE_PREPARED_STATEMENTS", default=True
):
    # Server-side parameters let psycopg prepare a query after its 5th run on a connection:
    # PostgreSQL then skips planning, which costs more than running most of these queries
    # (~3 ms for the permissions join). Turn off behind a transaction-mode PgBouncer.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        server_side_binding=True, prepare_threshold=5
    )
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
# An OAuth form with the allowed 100 rows in each of its six lists posts about 1,240 fields.
DATA_UPLOAD_MAX_NUMBER_FIELDS = 2000
# axes first: it refuses a locked (username, address) pair before any password is checked.
# Then passwords (Django's ModelBackend, superusers only when LOCAL_LOGIN is off), then single
# sign-on (answers only the OIDC callback, and only while OIDC is on).
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "connections_app.signin.LocalPasswordBackend",
    "connections_app.oidc.Backend",
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"
        if DEBUG
        else "whitenoise.storage.CompressedManifestStaticFilesStorage"
    },
}

# Production hardening; all of it is off in DEBUG so the dev server works over http.
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=not DEBUG)
SECURE_REDIRECT_EXEMPT = [r"^healthz$"]  # load balancers probe over plain http
SESSION_COOKIE_SECURE = not DEBUG
CSRF_COOKIE_SECURE = not DEBUG
SESSION_COOKIE_HTTPONLY = True
CSRF_COOKIE_HTTPONLY = True  # app.js takes the token from the form, never from the cookie
SESSION_COOKIE_AGE = env.int("SESSION_COOKIE_AGE", default=8 * 3600)
SESSION_EXPIRE_AT_BROWSER_CLOSE = True
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=0 if DEBUG else 31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = not DEBUG
SECURE_HSTS_PRELOAD = not DEBUG
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
# Every script and style comes from a static file: no inline code, so no 'unsafe-inline'.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF],
        "style-src": [SELF],
        "img-src": [SELF, "data:"],
        "form-action": [SELF],
        "frame-ancestors": [NONE],
        "base-uri": [NONE],
        "object-src": [NONE],
    }
}

# Failed sign-ins (django-axes, connections_app.signin): counted per (username, address), that
# pair refused for a while after too many; a username's failures from anywhere only slow its
# sign-ins (never refuse them), so no guesser elsewhere can lock its owner out.
AXES_FAILURE_LIMIT = env.int("LOGIN_FAILURES_PER_USER_AND_ADDRESS", default=5)
AXES_COOLOFF_TIME = timedelta(seconds=env.int("LOGIN_FAILURE_WINDOW_SECONDS", default=15 * 60))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True  # a success clears its own pair's count (not others')
AXES_RESET_COOL_OFF_ON_FAILURE_DURING_LOCKOUT = False  # a refused attempt does not extend it
AXES_CLIENT_IP_CALLABLE = "connections_app.signin.client_address"
AXES_USERNAME_CALLABLE = "connections_app.signin.username_key"  # keyed digests, never the text
AXES_LOCKOUT_CALLABLE = "connections_app.signin.lockout_response"
AXES_WHITELIST_CALLABLE = "connections_app.signin.not_a_password_attempt"  # the OIDC callback
AXES_DISABLE_ACCESS_LOG = True  # successful sign-ins would be stored with their usernames
AXES_VERBOSE = False  # its banner on every command, and a line per sign-in
AXES_SENSITIVE_PARAMETERS = ["username", "ip_address", "old_password", "new_password1",
                             "new_password2", "csrfmiddlewaretoken"]  # fmt: skip
LOGIN_SLOWDOWN_STEP = env.float("LOGIN_SLOWDOWN_STEP_SECONDS", default=0.5)  # per failure
LOGIN_SLOWDOWN_MAX_SECONDS = env.float("LOGIN_SLOWDOWN_MAX_SECONDS", default=3.0)
# Proxies whose X-Forwarded-For is believed (addresses or CIDRs); nobody else's is.
TRUSTED_PROXIES = env.list("TRUSTED_PROXIES", default=[])
try:
    [ipaddress.ip_network(proxy.strip(), strict=False) for proxy in TRUSTED_PROXIES]
except ValueError as exc:
    raise ImproperlyConfigured(f"TRUSTED_PROXIES: {exc}") from None

# Single sign-on (OpenID Connect, mozilla-django-oidc; connections_app.oidc), on when a client id
# is set. Users are matched on the provider's `sub`; the groups claim gives the app's groups.
OIDC_RP_CLIENT_ID = env.str("OIDC_RP_CLIENT_ID", default="")
OIDC_RP_CLIENT_SECRET = env.str("OIDC_RP_CLIENT_SECRET", default="")
OIDC_OP_AUTHORIZATION_ENDPOINT = env.str("OIDC_OP_AUTHORIZATION_ENDPOINT", default="")
OIDC_OP_TOKEN_ENDPOINT = env.str("OIDC_OP_TOKEN_ENDPOINT", default="")
OIDC_OP_USER_ENDPOINT = env.str("OIDC_OP_USER_ENDPOINT", default="")
OIDC_OP_JWKS_ENDPOINT = env.str("OIDC_OP_JWKS_ENDPOINT", default="")
OIDC_OP_ISSUER = env.str("OIDC_OP_ISSUER", default="")  # when set, ID tokens must name it
OIDC_RP_SIGN_ALGO = env.str("OIDC_RP_SIGN_ALGO", default="RS256")
OIDC_RP_SCOPES = env.str("OIDC_RP_SCOPES", default="openid email profile")
OIDC_GROUPS_CLAIM = env.str("OIDC_GROUPS_CLAIM", default="groups")
OIDC_PROVIDER_NAME = env.str("OIDC_PROVIDER_NAME", default="single sign-on")
OIDC_RENEW_ID_TOKEN_EXPIRY_SECONDS = env.int("OIDC_RENEW_ID_TOKEN_EXPIRY_SECONDS", default=15 * 60)
OIDC_TIMEOUT = env.float("OIDC_TIMEOUT", default=5.0)  # seconds per call to the provider


def _group_map(text: str) -> dict[str, tuple[str, ...]]:
    """`idp-group=app-group,...`, or a JSON object for group names that hold commas, to
    {provider group: (app groups, ...)}: one provider group may give several app groups."""
    text = text.strip()
    if text.startswith("{"):
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise ImproperlyConfigured(f"OIDC_GROUP_MAP is not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise ImproperlyConfigured("OIDC_GROUP_MAP: a JSON object is expected.")
        pairs = []
        for idp, targets in data.items():
            targets = [targets] if isinstance(targets, str) else targets
            pairs += (
                [(idp, target) for target in targets]
                if isinstance(targets, list)
                else [(idp, None)]
            )
    else:
        pairs = [item.rpartition("=")[::2] for item in text.split(",") if item.strip()]
    mapping: dict[str, tuple[str, ...]] = {}
    for idp, target in pairs:
        if not (isinstance(target, str) and idp.strip() and target.strip()):
            raise ImproperlyConfigured(
                f"OIDC_GROUP_MAP: {idp!r} = {target!r} is not provider-group=app-group."
            )
        mapping[idp.strip()] = (*mapping.get(idp.strip(), ()), target.strip())
    return mapping


OIDC_GROUP_MAP = _group_map(env.str("OIDC_GROUP_MAP", default=""))
if OIDC_RP_CLIENT_ID:
    _needed = ("OIDC_RP_CLIENT_SECRET", "OIDC_OP_AUTHORIZATION_ENDPOINT", "OIDC_OP_TOKEN_ENDPOINT",
               "OIDC_OP_USER_ENDPOINT", "OIDC_OP_JWKS_ENDPOINT", "OIDC_GROUP_MAP")  # fmt: skip
    _unset = [name for name in _needed if not globals()[name]]
    if _unset:
        raise ImproperlyConfigured(f"OIDC_RP_CLIENT_ID is set, so {', '.join(_unset)} must be too.")
OIDC_USE_PKCE = True  # a code read from a log or a proxy is useless without its verifier
OIDC_CALLBACK_CLASS = "connections_app.oidc.CallbackView"
OIDC_AUTHENTICATE_CLASS = "connections_app.oidc.AuthenticateView"
# Tokens stay out of the session (and so out of the database): nothing here calls the
# provider's APIs with them, and the session is re-checked by signing in again.
OIDC_STORE_ACCESS_TOKEN = False
OIDC_STORE_ID_TOKEN = False
# Passwords: with LOCAL_LOGIN off, only superusers (break-glass) may use them.
LOCAL_LOGIN = env.bool("LOCAL_LOGIN", default=True)

# /healthz answers from a probe of the database, Vault and AWS at most this old (per process).
HEALTH_CACHE_SECONDS = env.float("HEALTH_CACHE_SECONDS", default=5.0)

# Error reports (mailed to ADMINS when DEBUG is off) hide VAULT_* and AUDIT_* settings too.
DEFAULT_EXCEPTION_REPORTER_FILTER = "connections_app.reporting.SecretSafeExceptionReporterFilter"
ADMINS = [(address, address) for address in env.list("ADMINS", default=[])]
SERVER_EMAIL = env.str("SERVER_EMAIL", default="root@localhost")
vars().update(env.email_url("EMAIL_URL", default="smtp://localhost:25"))

# Vault / OpenBao
VAULT_ADDR = env.str("VAULT_ADDR", default="http://127.0.0.1:8200")
VAULT_TOKEN = env.str("VAULT_TOKEN", default="")
VAULT_ROLE_ID = env.str("VAULT_ROLE_ID", default="")
VAULT_SECRET_ID = env.str("VAULT_SECRET_ID", default="")
VAULT_APPROLE_MOUNT = env.str("VAULT_APPROLE_MOUNT", default="approle")
VAULT_K8S_ROLE = env.str("VAULT_K8S_ROLE", default="")
VAULT_K8S_MOUNT = env.str("VAULT_K8S_MOUNT", default="kubernetes")
VAULT_K8S_TOKEN_PATH = env.str(
    "VAULT_K8S_TOKEN_PATH", default="/var/run/secrets/kubernetes.io/serviceaccount/token"
)
VAULT_NAMESPACE = env.str("VAULT_NAMESPACE", default="")
VAULT_CACERT = env.str("VAULT_CACERT", default="")
VAULT_TIMEOUT = env.float("VAULT_TIMEOUT", default=5.0)

# Audit checkpoints (connections_app.checkpoints): the chain's head signed by a Transit key the
# app may use but not export, and kept in a KV v2 path it may add to but never change.
AUDIT_TRANSIT_MOUNT = env.str("AUDIT_TRANSIT_MOUNT", default="transit")
AUDIT_TRANSIT_KEY = env.str("AUDIT_TRANSIT_KEY", default="audit-checkpoints")
AUDIT_CHECKPOINT_MOUNT = env.str("AUDIT_CHECKPOINT_MOUNT", default="secret")
AUDIT_CHECKPOINT_PATH = env.str(
    "AUDIT_CHECKPOINT_PATH", default="audit-checkpoints/eventbridge-connections"
)
AUDIT_CHECKPOINT_EVENTS = env.int("AUDIT_CHECKPOINT_EVENTS", default=1000)
AUDIT_CHECKPOINT_MINUTES = env.float("AUDIT_CHECKPOINT_MINUTES", default=60)
if AUDIT_CHECKPOINT_EVENTS < 1 or AUDIT_CHECKPOINT_MINUTES <= 0:
    raise ImproperlyConfigured("AUDIT_CHECKPOINT_EVENTS and AUDIT_CHECKPOINT_MINUTES must be > 0.")

# AWS: boto3's own credential chain and AWS_ENDPOINT_URL(_EVENTS) variables apply.
AWS_REGION = env.str("AWS_REGION", default=env.str("AWS_DEFAULT_REGION", default="us-east-1"))
AWS_CONNECT_TIMEOUT = env.float("AWS_CONNECT_TIMEOUT", default=3.0)
AWS_READ_TIMEOUT = env.float("AWS_READ_TIMEOUT", default=10.0)
AWS_MAX_ATTEMPTS = env.int("AWS_MAX_ATTEMPTS", default=3)

# References a requester may check with the Check button per minute (each is a Vault read).
CHECKS_PER_MINUTE = env.int("CHECKS_PER_MINUTE", default=120)
REQUEST_TTL = timedelta(seconds=env.int("REQUEST_TTL_SECONDS", default=7 * 24 * 3600))
# Sweeps of a target: how long one may hold its lease before another worker may take over.
SWEEP_LEASE = timedelta(seconds=env.int("SWEEP_LEASE_SECONDS", default=15 * 60))
SWEEP_MINUTES = env.int("SWEEP_MINUTES", default=15)  # how often every target is swept
# A modification in AWS this close to the end of our own change is taken to be ours (AWS may
# move LastModifiedTime while it settles); later ones are "changed outside".
OURS_WITHIN = timedelta(seconds=env.int("OURS_WITHIN_SECONDS", default=60))

# The task worker: django-q2 clusters (`manage.py qcluster`) on the ORM broker, so that every
# cluster on every machine shares the work through the one database.
Q_CLUSTER = {
    "name": "connections",
    "orm": "default",
    "workers": env.int("Q_WORKERS", default=2),
    "timeout": env.int("Q_TIMEOUT_SECONDS", default=900),  # a task running longer is stopped
    "retry": env.int("Q_RETRY_SECONDS", default=1200),  # a task not acknowledged is run again
    "max_attempts": 3,
    "catch_up": False,  # a stopped cluster does not replay every missed schedule
    "poll": 1,
    "save_limit": 500,
    "ack_failures": True,
}

# Notifications: an outbox sent by the worker (email through EMAIL_URL; chat through Apprise
# URLs per group, "group=url;group=url", which hold tokens: they stay in the environment).
SITE_URL = env.str("SITE_URL", default="http://127.0.0.1:8000")  # for links in messages
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="eventbridge-connections@localhost")
NOTIFY_DOMAIN = env.str("NOTIFY_DOMAIN", default="eventbridge-connections.local")  # Message-IDs
NOTIFY_APPRISE = dict(
    part.split("=", 1) for part in env.str("NOTIFY_APPRISE", default="").split(";") if "=" in part
)
NOTIFY_LAST_CALL = timedelta(hours=env.int("NOTIFY_LAST_CALL_HOURS", default=24))
NOTIFY_SEND_LEASE = timedelta(seconds=env.int("NOTIFY_SEND_LEASE_SECONDS", default=120))
NOTIFY_MAX_ATTEMPTS = env.int("NOTIFY_MAX_ATTEMPTS", default=5)
EMAIL_TIMEOUT = env.float("EMAIL_TIMEOUT", default=10.0)

# A request left in "submitting" longer than this is assumed to have lost its response.
SUBMIT_STALE_AFTER = timedelta(seconds=env.int("SUBMIT_STALE_AFTER_SECONDS", default=120))

# Clients that print request bodies (botocore prints secrets at DEBUG) stay at WARNING.
_QUIET = {"level": "WARNING", "propagate": True}
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"require_debug_false": {"()": "django.utils.log.RequireDebugFalse"}},
    "handlers": {
        "console": {"class": "logging.StreamHandler"},
        # The HTML report too: both pass through DEFAULT_EXCEPTION_REPORTER_FILTER.
        "mail_admins": {
            "level": "ERROR",
            "filters": ["require_debug_false"],
            "class": "django.utils.log.AdminEmailHandler",
            "include_html": True,
        },
    },
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    "loggers": {
        "django": {"handlers": ["mail_admins"], "level": "INFO", "propagate": True},
        **{
            name: _QUIET
            for name in (
                "botocore",
                "boto3",
                "s3transfer",
                "urllib3",
                "hvac",
                "requests",
                "apprise",
            )
        },
    },
}
