"""Identity providers for the single sign-on tests, each a real HTTP server on loopback.

`Provider` is oidc-provider-mock (authlib underneath): authorization page, token, userinfo and
JWKS endpoints, users whose claims a test sets with `PUT /users/<sub>`. `TokenServer` is a
provider's token, userinfo and JWKS endpoints answering with ID tokens the test signs itself,
for the tokens no honest provider issues (another key, expired, for another client).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, quote, urlencode, urlsplit, urlunsplit

import jwt
import oidc_provider_mock
import requests
import werkzeug.serving
from cryptography.hazmat.primitives.asymmetric import rsa

CLIENT_ID = "eventbridge-dashboard"
GROUP_MAP = {
    "idp-platform-requesters": ("connection-requesters",),
    "idp-approvers": ("connection-approvers",),
    "idp-audit": ("auditors",),
}
ROLE_GROUPS = {  # the provider's group for each app role
    "connection-requesters": "idp-platform-requesters",
    "connection-approvers": "idp-approvers",
    "auditors": "idp-audit",
}


class _Served:
    """An HTTP server on 127.0.0.1 and a free port, served by a thread while in a `with`."""

    def _serve(self, server) -> None:
        self._server = server
        self.url = f"http://127.0.0.1:{server.server_port}"
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._thread.join(timeout=5)
        self._server.server_close()


class Provider(_Served):
    """oidc-provider-mock, served while in a `with`."""

    def __init__(self, **options):
        app = oidc_provider_mock.app(require_nonce=True, **options)
        self._serve(werkzeug.serving.make_server("127.0.0.1", 0, app, threaded=True))

    def endpoints(self) -> dict:
        return {
            "OIDC_OP_AUTHORIZATION_ENDPOINT": f"{self.url}/oauth2/authorize",
            "OIDC_OP_TOKEN_ENDPOINT": f"{self.url}/oauth2/token",
            "OIDC_OP_USER_ENDPOINT": f"{self.url}/userinfo",
            "OIDC_OP_JWKS_ENDPOINT": f"{self.url}/jwks",
            "OIDC_OP_ISSUER": self.url,
        }

    def set_user(self, sub: str, **claims) -> None:
        """The person's claims at the provider, from the next sign-in on."""
        response = requests.put(f"{self.url}/users/{quote(sub, safe='')}", json=claims, timeout=5)
        assert response.status_code == 204, response.text

    def authorize(self, location: str, sub: str) -> str:
        """What a person does on the provider's page: sign in as `sub` and press Authorize.
        Returns where the provider sends the browser back (the app's callback)."""
        response = requests.post(location, data={"sub": sub}, allow_redirects=False, timeout=5)
        assert response.status_code == 302, response.text
        return response.headers["Location"]

    def kid(self) -> str:
        return requests.get(f"{self.url}/jwks", timeout=5).json()["keys"][0]["kid"]


def configure(settings, endpoints: dict, *, client_secret: str) -> None:
    """Single sign-on on, pointed at `endpoints`."""
    settings.OIDC_RP_CLIENT_ID = CLIENT_ID
    settings.OIDC_RP_CLIENT_SECRET = client_secret
    settings.OIDC_GROUP_MAP = GROUP_MAP
    settings.OIDC_PROVIDER_NAME = "Test IdP"
    for name, value in endpoints.items():
        setattr(settings, name, value)


def query(url: str) -> dict[str, str]:
    return {key: values[0] for key, values in parse_qs(urlsplit(url).query).items()}


def with_query(url: str, **changes) -> str:
    parts = urlsplit(url)
    params = {**query(url), **changes}
    params = {key: value for key, value in params.items() if value is not None}
    return urlunsplit(parts._replace(query=urlencode(params)))


def path_and_query(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}" if parts.query else parts.path


def sign_in(client, provider: Provider, sub: str, *, next_url: str = ""):
    """The whole code flow through the Django test client and the real provider; returns the
    callback's response."""
    start = client.get("/oidc/authenticate/" + (f"?next={quote(next_url)}" if next_url else ""))
    assert start.status_code == 302, start
    back = provider.authorize(start["Location"], sub)
    return client.get(path_and_query(back))


# ---------------------------------------------------------------------------
# Tokens a test signs itself


def new_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


class TokenServer(_Served):
    """A provider's token, userinfo and JWKS endpoints on 127.0.0.1 and a free port, answering
    with the ID token the test prepared (`id_token`) and publishing `key` as the trusted one."""

    def __init__(self, issuer: str = "https://idp.test"):
        self.issuer = issuer
        self.key = new_key()
        self.kid = "trusted-key"
        self.id_token = ""
        self.access_token = f"ACCESS{secrets.token_hex(16)}"
        self.userinfo: dict = {}
        self.seen: list[tuple[str, str]] = []  # (method, path)
        self.token_forms: list[dict] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _answer(self, payload) -> None:
                body = json.dumps(payload).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):  # noqa: N802
                server.seen.append(("GET", self.path))
                if self.path == "/jwks":
                    public = jwt.algorithms.RSAAlgorithm.to_jwk(
                        server.key.public_key(), as_dict=True
                    )
                    self._answer({"keys": [{**public, "kid": server.kid, "alg": "RS256"}]})
                else:
                    self._answer(server.userinfo)

            def do_POST(self):  # noqa: N802
                server.seen.append(("POST", self.path))
                length = int(self.headers.get("Content-Length") or 0)
                server.token_forms.append(parse_qs(self.rfile.read(length).decode()))
                self._answer(server.token_response())

        self._serve(ThreadingHTTPServer(("127.0.0.1", 0), Handler))

    def token_response(self):
        return {
            "access_token": self.access_token,
            "token_type": "Bearer",
            "expires_in": 300,
            "id_token": self.id_token,
        }

    def endpoints(self, *, authorization: str = "https://idp.test/authorize") -> dict:
        return {
            "OIDC_OP_AUTHORIZATION_ENDPOINT": authorization,
            "OIDC_OP_TOKEN_ENDPOINT": f"{self.url}/token",
            "OIDC_OP_USER_ENDPOINT": f"{self.url}/userinfo",
            "OIDC_OP_JWKS_ENDPOINT": f"{self.url}/jwks",
            "OIDC_OP_ISSUER": self.issuer,
        }

    def claims(self, sub: str, nonce: str) -> dict:
        """What an honest provider signs for this sign-in."""
        now = int(time.time())
        return {"iss": self.issuer, "sub": sub, "aud": CLIENT_ID, "iat": now, "exp": now + 300,
                "nonce": nonce}  # fmt: skip

    def sign(self, claims: dict, *, key=None, kid: str | None = None, alg: str = "RS256") -> str:
        headers = {"kid": kid or self.kid}
        if alg == "none":
            return jwt.encode(claims, None, algorithm="none", headers=headers)
        return jwt.encode(claims, key or self.key, algorithm=alg, headers=headers)


def start_callback(client) -> tuple[str, str]:
    """Begin a sign-in (state, nonce and PKCE verifier kept in the session); returns the state
    and nonce the app sent to the provider."""
    start = client.get("/oidc/authenticate/")
    assert start.status_code == 302, start
    params = query(start["Location"])
    return params["state"], params["nonce"]


def hmac_with_public_key(server: TokenServer, claims: dict) -> str:
    """The old algorithm-confusion attack: HS256 keyed with the provider's public key (PyJWT
    refuses to make one, so it is made by hand)."""
    from cryptography.hazmat.primitives import serialization

    def b64(data: bytes) -> bytes:
        return base64.urlsafe_b64encode(data).rstrip(b"=")

    public = server.key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = {"alg": "HS256", "typ": "JWT", "kid": server.kid}
    signing_input = b64(json.dumps(header).encode()) + b"." + b64(json.dumps(claims).encode())
    signature = hmac.new(public, signing_input, hashlib.sha256).digest()
    return (signing_input + b"." + b64(signature)).decode()
