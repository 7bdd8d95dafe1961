"""load_p95_ms, load_error_rate: signed-in users on gunicorn with the production settings.

gunicorn runs config.settings (DEBUG off, PostgreSQL, whitenoise manifest) on a free loopback
port behind a pretend TLS proxy (`X-Forwarded-Proto: https`). BENCH_LOAD_USERS users (default 50)
sign in first; then each loops pausing 0.5-1.5 s between requests to the request form (GET and
POST, following the redirect like a browser), the approval queue, request pages, the connections
list and connection pages (each asks AWS for the API destinations using it), the home page of the
fleet, and the audit log.
The window is bounded by BENCH_LOAD_SECONDS (default 60) after a BENCH_LOAD_WARMUP (default 5 s,
not measured) and by BENCH_LOAD_MAX_REQUESTS; latency is measured by the client. An error is
a timeout, a failed connection, an unexpected status or a seeded secret value in a response.
"""

from __future__ import annotations

import http.client
import os
import random
import re
import resource
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from http.cookies import SimpleCookie
from urllib.parse import urlencode

USERS = int(os.environ.get("BENCH_LOAD_USERS", "50"))
SECONDS = float(os.environ.get("BENCH_LOAD_SECONDS", "60"))
WARMUP = float(os.environ.get("BENCH_LOAD_WARMUP", "5"))
MAX_REQUESTS = int(os.environ.get("BENCH_LOAD_MAX_REQUESTS", "20000"))
# Chosen by measurement on 2 cores: 4 sync workers beat 5 or 6, and 2 gthread workers x 4
# threads (threads of one worker share its GIL); BENCH_LOAD_THREADS > 1 uses gthread.
WORKERS = int(os.environ.get("BENCH_LOAD_WORKERS", "4"))
THREADS = int(os.environ.get("BENCH_LOAD_THREADS", "1"))
PAUSE = (0.5, 1.5)
TIMEOUT = 10.0
HOST = "127.0.0.1"
SECRET_PATH = "secret/bench-load/partner"
# What each role does, with weights; "post" is a form post followed by its redirect.
ACTIONS = {
    "requester": (
        ("form", 4), ("post", 2), ("own", 4), ("connections", 1), ("connection", 1), ("home", 1),
    ),
    "approver": (("queue", 5), ("pending", 4), ("audit", 1), ("connection", 1), ("home", 1)),
    "auditor": (("audit", 7), ("any", 3), ("connections", 1), ("home", 1)),
}  # fmt: skip
CONNECTIONS = 5  # made through an approval before the run, for the connection pages
DETAIL = re.compile(r"^/requests/(\d+)/$")


def _roles(users: int) -> list[str]:
    """Seven in ten are requesters, two approvers, one an auditor."""
    approvers, auditors = max(1, users // 5), max(1, users // 10)
    return (
        ["approver"] * approvers
        + ["auditor"] * auditors
        + ["requester"] * (users - approvers - auditors)
    )


class Browser:
    """One user's keep-alive connection and cookies; posts carry CSRF as a browser over HTTPS."""

    def __init__(self, port: int, secret_values: list[bytes]):
        self.port = port
        self.origin = f"https://{HOST}:{port}"
        self.cookies: dict[str, str] = {}
        self.conn: http.client.HTTPConnection | None = None
        self.secret_values = secret_values

    def request(self, method: str, path: str, form: dict | None = None):
        """(status, Location header, body); raises on a connection failure or timeout."""
        headers = {"X-Forwarded-Proto": "https", "Accept": "text/html"}
        body = None
        if form is not None:
            body = urlencode({**form, "csrfmiddlewaretoken": self.cookies.get("csrftoken", "")})
            headers.update(
                {
                    "Content-Type": "application/x-www-form-urlencoded",
                    "Origin": self.origin,
                    "Referer": self.origin + path,
                }
            )
        if self.cookies:
            # Secure cookies go back over plain http: TLS ends at the (pretend) proxy.
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        for attempt in (1, 2):
            reused = self.conn is not None
            if self.conn is None:
                self.conn = http.client.HTTPConnection(HOST, self.port, timeout=TIMEOUT)
            try:
                self.conn.request(method, path, body, headers)
                response = self.conn.getresponse()
                data = response.read()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                self.close()
                if reused and attempt == 1:
                    continue  # the server closed an idle keep-alive connection: reconnect once
                raise
            except Exception:
                self.close()
                raise
            if response.will_close:
                self.close()
            for header in response.headers.get_all("Set-Cookie") or []:
                for name, morsel in SimpleCookie(header).items():
                    if morsel["max-age"] == "0":
                        self.cookies.pop(name, None)
                    else:
                        self.cookies[name] = morsel.value
            return response.status, response.headers.get("Location", ""), data
        raise AssertionError("unreachable")

    def leaks(self, data: bytes) -> bool:
        return any(value in data for value in self.secret_values)

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def _form(kind: str) -> dict:
    """The request form as posted with JavaScript off: every section and all six formsets."""
    from connections_app.forms import PARAMETER_LISTS

    data = {
        "name": f"load-{uuid.uuid4().hex[:20]}",
        "description": "load bench",
        "authorization_type": kind,
        "basic_username": "partner",
        "basic_password": f"{SECRET_PATH}#password",
        "oauth_client_id": "client-1",
        "oauth_client_secret": f"{SECRET_PATH}#client_secret",
        "oauth_endpoint": "https://auth.example.com/oauth2/token",
        "oauth_http_method": "POST",
        "oauth_resource_arn": "",
        "apikey_name": "x-api-key",
        "apikey_value": f"{SECRET_PATH}#api_key",
        "invocation_resource_arn": "",
        "kms_key": "",
        "_save": "",
    }
    rows = {
        "oauth_body": [("grant_type", "client_credentials", False)],
        "inv_header": [("X-Token", f"{SECRET_PATH}#header_token", True), ("X-Plain", "v", False)],
    }
    for prefix, _, _ in PARAMETER_LISTS:
        items = rows.get(prefix, [])
        data.update(
            {
                f"{prefix}-TOTAL_FORMS": str(len(items)),
                f"{prefix}-INITIAL_FORMS": "0",
                f"{prefix}-MIN_NUM_FORMS": "0",
                f"{prefix}-MAX_NUM_FORMS": "100",
            }
        )
        for i, (key, value, secret) in enumerate(items):
            data[f"{prefix}-{i}-key"] = key
            data[f"{prefix}-{i}-value"] = value
            if secret:
                data[f"{prefix}-{i}-is_secret"] = "on"
    return data


class Load:
    """The shared clock, request ids and results of one run."""

    def __init__(self, start: float, own: dict[str, list[int]], pending: list[int], made):
        self.made = made  # ids of connections to visit
        self.measure_from = start + WARMUP
        self.stop_at = self.measure_from + SECONDS
        self.own = own  # username -> ids of that requester's requests
        self.pending = pending  # every request id filed, seeded ones first
        self.latencies: dict[str, list[float]] = defaultdict(list)
        self.errors: dict[str, int] = defaultdict(int)
        self.lock = threading.Lock()
        self.count = 0

    def running(self) -> bool:
        return time.monotonic() < self.stop_at and self.count < MAX_REQUESTS

    def timed(self, browser: Browser, page: str, method: str, path: str, form=None, expect=200):
        began = time.monotonic()
        start = time.perf_counter()
        try:
            status, location, data = browser.request(method, path, form)
            error = None if status == expect else f"{page} {status}"
            if error is None and browser.leaks(data):
                error = f"{page} secret value in response"
        except (OSError, http.client.HTTPException) as exc:
            status, location, error = 0, "", f"{page} {type(exc).__name__}"
        elapsed = time.perf_counter() - start
        if self.measure_from <= began < self.stop_at:
            with self.lock:
                self.count += 1
                self.latencies[page].append(elapsed)
                if error:
                    self.errors[error] += 1
        return status, location

    def user(self, browser: Browser, username: str, role: str, seed: int) -> None:
        rng = random.Random(seed)  # noqa: S311 - think times and choices, not secrets
        names, weights = zip(*ACTIONS[role], strict=True)
        time.sleep(rng.uniform(0, PAUSE[1]))  # users do not start in step
        while self.running():
            time.sleep(rng.uniform(*PAUSE))
            if not self.running():
                break
            action = rng.choices(names, weights)[0]
            if action == "form":
                self.timed(browser, "form", "GET", "/requests/new/")
            elif action == "post":
                kind = rng.choice(("BASIC", "OAUTH_CLIENT_CREDENTIALS", "API_KEY"))
                status, location = self.timed(
                    browser, "post", "POST", "/requests/new/", _form(kind), expect=302
                )
                found = DETAIL.match(location)
                if status == 302 and found:
                    with self.lock:
                        self.own[username].append(int(found.group(1)))
                        self.pending.append(int(found.group(1)))
                    self.timed(browser, "request", "GET", location)  # the browser follows
            elif action == "own":
                self.timed(
                    browser, "request", "GET", f"/requests/{rng.choice(self.own[username])}/"
                )
            elif action == "queue":
                self.timed(browser, "queue", "GET", "/approvals/")
            elif action == "pending":
                pk = rng.choice(self.pending[-50:])  # the newest, as an approver works the queue
                self.timed(browser, "request", "GET", f"/requests/{pk}/")
            elif action == "any":
                self.timed(browser, "request", "GET", f"/requests/{rng.choice(self.pending)}/")
            elif action == "audit":
                self.timed(browser, "audit", "GET", "/audit/")
            elif action == "home":
                self.timed(browser, "home", "GET", "/")
            elif action == "connections":
                self.timed(browser, "conns", "GET", "/connections/")
            elif action == "connection":
                pk = rng.choice(self.made)
                self.timed(browser, "conn", "GET", f"/connections/{pk}/")


def _sign_in(browser: Browser, username: str, password: str) -> None:
    status, _, _ = browser.request("GET", "/accounts/login/")
    if status != 200 or "csrftoken" not in browser.cookies:
        raise RuntimeError(f"login page for {username}: HTTP {status}")
    status, location, _ = browser.request(
        "POST", "/accounts/login/", {"username": username, "password": password, "next": ""}
    )
    if status != 302 or "sessionid" not in browser.cookies:
        raise RuntimeError(f"sign-in of {username} failed: HTTP {status} -> {location}")


def _seed(ctx, secret_values: dict[str, str], password: str):
    """Users with one shared PBKDF2 hash (as production hashes), and one request per requester."""
    from django.contrib.auth.hashers import PBKDF2PasswordHasher
    from django.contrib.auth.models import Group, User

    from connections_app import devstack, roles, services

    devstack.bao(ctx.bao.url, ctx.bao.extra["token"], "kv", "put", SECRET_PATH,
                 *(f"{k}={v}" for k, v in secret_values.items()))  # fmt: skip
    hasher = PBKDF2PasswordHasher()  # the in-process test settings hash with MD5, unknown to prod
    encoded = hasher.encode(password, hasher.salt())
    groups = {
        "requester": Group.objects.get(name=roles.REQUESTERS),
        "approver": Group.objects.get(name=roles.APPROVERS),
        "auditor": Group.objects.get(name=roles.AUDITORS),
    }
    users = []
    for i, role in enumerate(_roles(USERS)):
        user, _ = User.objects.get_or_create(username=f"load-{role}-{i:03d}")
        user.password = encoded
        user.save(update_fields=["password"])
        user.groups.set([groups[role]])
        users.append((user, role))
    _cancel_pending(users)  # left over from an interrupted run
    _vacuum()
    own, pending = {}, []
    approver = next(user for user, role in users if role == "approver")
    made = []
    for user, _ in users[-CONNECTIONS:]:
        request = services.request_create(requester=user, document=_api_key_document())
        request = services.request_approve(
            request=request, approver=approver, seen_hash=request.document_hash
        )
        made.append(request.connection_id)
    for user, role in users:
        if role == "requester":
            request = services.request_create(requester=user, document=_api_key_document())
            own[user.username] = [request.pk]
            pending.append(request.pk)
    return users, own, pending, made


def _api_key_document() -> dict:
    return {
        "Name": f"load-{uuid.uuid4().hex[:20]}",
        "AuthorizationType": "API_KEY",
        "AuthParameters": {
            "ApiKeyAuthParameters": {
                "ApiKeyName": "x-api-key",
                "ApiKeyValue": {"vault": f"{SECRET_PATH}#api_key", "version": None},
            }
        },
    }


def _vacuum() -> None:
    """Runs cancel the requests they filed: clear those dead rows now, as autovacuum would in
    time, so that a run does not measure the churn of the runs before it."""
    from django.db import connection

    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("VACUUM ANALYZE connections_app_connectionrequest")


def _cancel_pending(users) -> int:
    """Cancel the load users' pending requests, so that queues do not grow from run to run."""
    from connections_app import services
    from connections_app.models import ConnectionRequest

    found = ConnectionRequest.objects.filter(
        requester__in=[user for user, _ in users], status=ConnectionRequest.PENDING
    ).select_related("requester")
    for request in found:
        services.request_cancel(request=request, actor=request.requester)
    return len(found)


def _gunicorn(ctx, port: int, log) -> subprocess.Popen:
    env = dict(os.environ)
    env.pop("SECURE_SSL_REDIRECT", None)  # the in-process test settings turned it off
    env.update(
        DJANGO_SETTINGS_MODULE="config.settings",
        DEBUG="False",
        SECRET_KEY=secrets.token_urlsafe(50),
        AUDIT_HMAC_KEY=secrets.token_urlsafe(50),
        ALLOWED_HOSTS=HOST,
        DATABASE_URL=ctx.database_url,
    )
    bin_dir = os.path.dirname(sys.executable)
    manage = [sys.executable, str(ctx.root / "manage.py")]
    subprocess.run([*manage, "collectstatic", "--noinput", "-v0"], env=env, check=True)
    return subprocess.Popen(
        [
            os.path.join(bin_dir, "gunicorn"),
            "config.wsgi:application",
            f"--bind={HOST}:{port}",
            f"--workers={WORKERS}",
            f"--threads={THREADS}",
            f"--worker-class={'gthread' if THREADS > 1 else 'sync'}",
            "--keep-alive=5",  # gthread: longer than a user's pause (sync closes every connection)
            "--graceful-timeout=5",
            "--no-control-socket",  # its default path is per user, shared with any other gunicorn
        ],
        cwd=ctx.root,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def _stop(proc: subprocess.Popen) -> None:
    """The master and its workers: they share the new session's process group."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)


def _wait_ready(port: int, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"gunicorn exited with {proc.returncode} while starting")
        try:
            with urllib.request.urlopen(f"http://{HOST}:{port}/healthz", timeout=5) as response:  # noqa: S310
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError("gunicorn did not answer /healthz within 60 s")


def _cpu_seconds(pgid: int) -> float:
    """User and system CPU of every live process in gunicorn's group (master and workers)."""
    total = 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rpartition(")")[2].split()
        except OSError:
            continue  # exited meanwhile
        if int(fields[2]) == pgid:  # fields after "(comm)": state ppid pgrp ... utime stime
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def _ms(values: list[float], q: int) -> float:
    if len(values) < 2:
        return round(values[0] * 1000, 1) if values else 0.0
    return round(statistics.quantiles(values, n=100, method="inclusive")[q - 1] * 1000, 1)


def run(ctx) -> dict:
    from connections_app import devstack

    secret_values = {k: f"LOAD{secrets.token_hex(12)}" for k in
                     ("password", "client_secret", "api_key", "header_token")}  # fmt: skip
    password = secrets.token_urlsafe(16)
    users, own, pending, made = _seed(ctx, secret_values, password)
    port = devstack.free_port()
    log = tempfile.TemporaryFile()  # noqa: SIM115 - read back only when the run fails
    proc = _gunicorn(ctx, port, log)
    markers = [value.encode() for value in secret_values.values()]
    browsers = []
    try:
        _wait_ready(port, proc)
        browsers = [(Browser(port, markers), user.username, role) for user, role in users]
        with ThreadPoolExecutor(WORKERS) as pool:  # PBKDF2 is slow on purpose: not measured
            list(pool.map(lambda b: _sign_in(b[0], b[1], password), browsers))
        load = Load(time.monotonic(), own, pending, made)
        cpu = resource.getrusage(resource.RUSAGE_SELF)
        threads = [
            threading.Thread(target=load.user, args=(browser, username, role, i), daemon=True)
            for i, (browser, username, role) in enumerate(browsers)
        ]
        for thread in threads:
            thread.start()
        time.sleep(max(0.0, load.measure_from - time.monotonic()))
        server_cpu = _cpu_seconds(proc.pid)
        for thread in threads:
            thread.join(WARMUP + SECONDS + PAUSE[1] * 2 + TIMEOUT * 3)
        seconds = min(time.monotonic(), load.stop_at) - load.measure_from
        used = resource.getrusage(resource.RUSAGE_SELF)
        server_cpu = _cpu_seconds(proc.pid) - server_cpu
        client_cpu = used.ru_utime + used.ru_stime - cpu.ru_utime - cpu.ru_stime
    except Exception:
        log.seek(0)
        print(log.read()[-4000:].decode(errors="replace"), file=sys.stderr)
        raise
    finally:
        for browser, _, _ in browsers:
            browser.close()
        _stop(proc)
        log.close()
        _cancel_pending(users)
    everything = [v for values in load.latencies.values() for v in values]
    errors = sum(load.errors.values())
    for page, values in sorted(load.latencies.items()):
        print(f"load {page:8} {len(values):6} requests  p50 {_ms(values, 50):7} ms  "
              f"p95 {_ms(values, 95):7} ms", file=sys.stderr)  # fmt: skip
    if load.errors:
        print(f"load errors: {dict(load.errors)}", file=sys.stderr)
    return {
        "load_p95_ms": _ms(everything, 95),
        "load_p50_ms": _ms(everything, 50),
        "load_error_rate": round(errors / max(1, len(everything)), 4),
        "load_requests": len(everything),
        "load_requests_per_s": round(len(everything) / seconds, 1),
        "load_seconds": round(seconds, 1),
        "load_users": USERS,
        # The client shares the machine with the server: its CPU over warm-up and window.
        "load_client_cpu_percent": round(100 * client_cpu / (WARMUP + seconds), 1),
        "load_server_cpu_ms_per_request": round(1000 * server_cpu / max(1, len(everything)), 1),
        "load_gunicorn": f"{WORKERS} gthread workers x {THREADS} threads"
        if THREADS > 1
        else f"{WORKERS} sync workers",
        # Other work on the machine moves the figures: the 1-minute load average, ours included.
        "load_host_loadavg": round(os.getloadavg()[0], 2),
        "load_p95_ms_by_page": {page: _ms(v, 95) for page, v in sorted(load.latencies.items())},
    }
