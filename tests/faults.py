"""A loopback HTTP proxy in front of a real server, for injecting faults into real traffic."""

from __future__ import annotations

import http.client
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit


class FaultProxy:
    """Forwards to `upstream`; `rules` decide per request: pass, delay, drop or answer.

    A rule is a callable (method, path, headers) -> action or None, where action is one of
    ("delay", seconds), ("drop_response",), ("status", code, body, headers).
    """

    def __init__(self, upstream: str):
        self.upstream = urlsplit(upstream)
        self.rules: list = []
        self.seen: list[tuple[str, str, str]] = []  # (method, path, X-Amz-Target)
        self._busy = 0  # requests being handled (a delayed one may outlive its caller)
        self._idle = threading.Condition()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # keep test output clean
                pass

            def _handle(self):
                with proxy._idle:
                    proxy._busy += 1
                try:
                    self._forward()
                finally:
                    with proxy._idle:
                        proxy._busy -= 1
                        proxy._idle.notify_all()

            def _forward(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                target = self.headers.get("X-Amz-Target", "")
                proxy.seen.append((self.command, self.path, target))
                action = None
                for rule in proxy.rules:
                    action = rule(self.command, self.path, self.headers)
                    if action:
                        break
                if action and action[0] == "delay":
                    time.sleep(action[1])
                if action and action[0] == "status":
                    _, code, payload, headers = action
                    self.send_response(code)
                    for key, value in headers.items():
                        self.send_header(key, value)
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                upstream = http.client.HTTPConnection(
                    proxy.upstream.hostname, proxy.upstream.port, timeout=30
                )
                headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                headers["Host"] = proxy.upstream.netloc
                upstream.request(self.command, self.path, body=body, headers=headers)
                response = upstream.getresponse()
                data = response.read()
                upstream.close()
                if action and action[0] == "drop_response":
                    # The upstream did the work; the caller never hears about it.
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                self.send_response(response.status)
                for key, value in response.getheaders():
                    if key.lower() not in ("content-length", "connection", "transfer-encoding"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def targets(self, name: str) -> int:
        return sum(1 for _, _, target in self.seen if target.endswith(f".{name}"))

    def wait_idle(self, timeout: float = 30) -> None:
        """Wait until every request has been answered (or dropped), delayed ones included."""
        with self._idle:
            if not self._idle.wait_for(lambda: self._busy == 0, timeout):
                raise TimeoutError("the proxy is still handling a request")


def path_rule(fragment: str, action: tuple | None, *, times: int | None = None, then=None):
    """A rule for requests whose path contains `fragment` (Vault: "/v1/secret/data/").

    `then(method, path)` runs first when given, so a test can act at that exact moment
    (revoke a token, kill a database session) and still let the request through.
    """
    left = [times]

    def rule(method, path, headers):
        if fragment not in path or (left[0] is not None and left[0] <= 0):
            return None
        if left[0] is not None:
            left[0] -= 1
        if then is not None:
            then(method, path)
        return action

    return rule


def aws_target(name: str, action: tuple | None, *, times: int | None = None, then=None):
    """A rule applying `action` to the AWS JSON operation `name` (at most `times` times).

    `then(method, path)` runs first when given (see path_rule); action None lets it through.
    """
    left = [times]

    def rule(method, path, headers):
        if not headers.get("X-Amz-Target", "").endswith(f".{name}"):
            return None
        if left[0] is not None:
            if left[0] <= 0:
                return None
            left[0] -= 1
        if then is not None:
            then(method, path)
        return action

    return rule


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
