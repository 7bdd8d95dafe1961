"""The embedded dev stack: an OpenBao dev server and a moto server on loopback.

Used by `manage.py devstack` (and so `make run`) and by the test suite's session fixtures.
Both are real servers reached over HTTP; nothing here is a fake.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

HOST = "127.0.0.1"


def free_port(pair: bool = False, preferred: int | None = None) -> int:
    """A free loopback port (and the next one too when `pair`: OpenBao takes port+1)."""
    candidates = ([preferred] if preferred else []) + [0] * 50
    for candidate in candidates:
        with socket.socket() as sock:
            try:
                sock.bind((HOST, candidate))
            except OSError:
                continue
            port = sock.getsockname()[1]
        if not pair or _port_free(port + 1):
            return port
    raise RuntimeError("no free loopback port")


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
        return True


def _bin(name: str) -> str:
    """A console script of this virtualenv (bao, moto_server), else one on PATH."""
    local = Path(sys.executable).parent / name
    if local.exists():
        return str(local)
    found = shutil.which(name)
    if not found:
        raise RuntimeError(f"{name} not found: install the dev extra (pip install -e '.[dev]')")
    return found


def _wait_http(url: str, timeout: float, proc: subprocess.Popen, accept=(200,)) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[0]} exited with {proc.returncode} while starting")
        try:
            with urllib.request.urlopen(url, timeout=1) as response:  # noqa: S310 - loopback only
                if response.status in accept:
                    return
        except urllib.error.HTTPError as exc:
            if exc.code in accept:
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{url} did not answer within {timeout:.0f}s")


@dataclass
class Server:
    proc: subprocess.Popen
    url: str
    log_path: Path
    extra: dict = field(default_factory=dict)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)


def start_openbao(*, port: int | None = None, root_token: str | None = None) -> Server:
    """`bao server -dev` on loopback; `extra` holds the root token and the unseal key."""
    port = free_port(pair=True, preferred=port)
    token = root_token or f"dev-root-{secrets.token_hex(8)}"
    log = Path(tempfile.mkstemp(prefix="openbao-", suffix=".log")[1])
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "BAO_"))}
    env["HOME"] = tempfile.mkdtemp(prefix="openbao-home-")  # keep the token helper out of ~
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [
                _bin("bao"),
                "server",
                "-dev",
                f"-dev-root-token-id={token}",
                f"-dev-listen-address={HOST}:{port}",
                "-dev-no-store-token",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    url = f"http://{HOST}:{port}"
    _wait_http(f"{url}/v1/sys/health", 30, proc)
    # The banner with the unseal key is printed just after the listener answers.
    unseal = None
    deadline = time.monotonic() + 5
    while unseal is None and time.monotonic() < deadline:
        unseal = re.search(r"Unseal Key: (\S+)", log.read_text(errors="replace"))
        if unseal is None:
            time.sleep(0.05)
    return Server(proc, url, log, {"token": token, "unseal_key": unseal.group(1) if unseal else ""})


def start_moto(*, port: int | None = None, script: str | None = None) -> Server:
    """`moto_server` on loopback, or `script` (a moto server extended for tests) run alike."""
    port = free_port(preferred=port)
    log = Path(tempfile.mkstemp(prefix="moto-", suffix=".log")[1])
    command = [sys.executable, script] if script else [_bin("moto_server")]
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [*command, "-H", HOST, "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://{HOST}:{port}"
    _wait_http(f"{url}/moto-api/", 30, proc)
    return Server(proc, url, log)


def bao(server_url: str, token: str, *args: str, input_text: str | None = None) -> str:
    """Run the bao CLI against a server (seeding, policies); returns stdout."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "BAO_"))}
    env.update(BAO_ADDR=server_url, BAO_TOKEN=token, HOME=tempfile.gettempdir())
    done = subprocess.run(
        [_bin("bao"), *args],
        env=env,
        input=input_text,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"bao {args[0]} {args[1] if len(args) > 1 else ''} failed: {done.stderr}"
        )
    return done.stdout


KV1_MOUNT = "legacy"


def seed_demo_secrets(server_url: str, token: str) -> dict[str, str]:
    """Random demo secrets for every authorization type; returns reference -> description."""
    bao(server_url, token, "secrets", "enable", "-path", KV1_MOUNT, "-version=1", "kv")

    def value() -> str:
        return secrets.token_urlsafe(24)

    bao(server_url, token, "kv", "put", "secret/eventbridge/partner-basic",
        "username=partner-basic", f"password={value()}")  # fmt: skip
    for _ in range(2):  # two versions, so that @version references have something to pick
        bao(server_url, token, "kv", "put", "secret/eventbridge/partner-oauth",
            f"client_secret={value()}", f"audience_token={value()}")  # fmt: skip
    bao(server_url, token, "kv", "put", "secret/eventbridge/partner-apikey", f"api_key={value()}")
    bao(server_url, token, "kv", "put", f"{KV1_MOUNT}/eventbridge/partner-v1", f"api_key={value()}")
    return {
        "secret/eventbridge/partner-basic#password": "BASIC password",
        "secret/eventbridge/partner-oauth#client_secret": "OAuth client secret (2 versions)",
        "secret/eventbridge/partner-oauth#audience_token@1": "a secret OAuth/invocation parameter",
        "secret/eventbridge/partner-apikey#api_key": "API key value",
        f"{KV1_MOUNT}/eventbridge/partner-v1#api_key": "API key value on a KV v1 mount",
    }


AUDIT_POLICY = "eventbridge-audit-checkpoints"


def seed_audit_signing(server_url: str, token: str) -> None:
    """Transit with the ed25519 key that signs audit checkpoints (not exportable, the default),
    the KV v2 mount of their store, and the app's checkpoint policy (`bao policy read`), as the
    app's settings name them."""
    from django.conf import settings

    from .checkpoints import vault_policy

    transit_mount, key = settings.AUDIT_TRANSIT_MOUNT, settings.AUDIT_TRANSIT_KEY
    store_mount, policy = settings.AUDIT_CHECKPOINT_MOUNT, vault_policy()
    mounts = json.loads(bao(server_url, token, "secrets", "list", "-format=json"))
    if f"{transit_mount}/" not in mounts:
        bao(server_url, token, "secrets", "enable", f"-path={transit_mount}", "transit")
    if f"{store_mount}/" not in mounts:
        bao(server_url, token, "secrets", "enable", f"-path={store_mount}", "-version=2", "kv")
    bao(server_url, token, "write", "-f", f"{transit_mount}/keys/{key}", "type=ed25519")
    bao(server_url, token, "policy", "write", AUDIT_POLICY, "-", input_text=policy)
