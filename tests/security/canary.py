"""The canary sweep's machinery: what is captured (logs, responses, mail, tables) and how a
canary is looked for in it (raw, base64 at every byte offset, URL-encoded, JSON- and
HTML-escaped, and each canary's random cores alone, which survive any other escaping).
"""

from __future__ import annotations

import base64
import contextlib
import html
import json
import logging
import re
import secrets
import zlib
from dataclasses import dataclass, field
from urllib.parse import quote, quote_plus

from django.conf import settings
from django.core import mail
from django.db import connection
from django.test import Client

# Turned up to DEBUG by the sweep, beside every logger the settings name (those the app
# quiets included): the root, and Django's and the app's own.
LOUD = (
    "",
    "django.request",
    "django.db.backends",
    "django.security",
    "django.template",
    "connections_app",
)


def make_canary(tag: str, *, ascii_only: bool = False) -> str:
    """Two random cores around characters that JSON, URL, HTML and base64 all rewrite."""
    odd = ' /+"=&%~<>' + ("" if ascii_only else "é€")
    return f"sw{tag}{secrets.token_hex(8)}{odd}{secrets.token_hex(8)}"


def _b64_variants(data: bytes) -> list[str]:
    """Base64 text that any blob holding `data`, at any offset, must contain."""
    out = []
    for pad in range(3):
        encoded = base64.b64encode(b"\0" * pad + data).decode()
        start = (pad + 2) // 3 * 4  # first group made only of `data`'s bytes
        end = (pad + len(data)) // 3 * 4  # last complete group
        core = encoded[start:end]
        if len(core) >= 12:
            out += [core, core.replace("+", "-").replace("/", "_")]
    return out


def needles(value: str) -> dict[str, str]:
    """encoding name -> text that betrays `value`."""
    found = {"raw": value}
    for i, core in enumerate(re.findall(r"[0-9a-f]{16}", value)):
        found[f"core{i + 1}"] = core
    found["json"] = json.dumps(value)[1:-1]
    found["json-utf8"] = json.dumps(value, ensure_ascii=False)[1:-1]
    found["url"] = quote(value, safe="")
    found["url-path"] = quote(value)
    found["url-plus"] = quote_plus(value)
    found["url-lower"] = re.sub(r"%[0-9A-F]{2}", lambda m: m.group().lower(), quote(value, safe=""))
    found["html"] = html.escape(value)
    found["unicode-escape"] = value.encode("unicode_escape").decode()
    for name, data in (("utf8", value.encode()), ("json", found["json"].encode())):
        for i, text in enumerate(_b64_variants(data)):
            found[f"base64-{name}-{i}"] = text
    return {name: text for name, text in found.items() if text}


def _decoded_blobs(text: str) -> list[str]:
    """Signed cookies and sessions hide text in (zlib-compressed) base64: open every blob."""
    out = []
    for blob in set(re.findall(r"[A-Za-z0-9_\-+/]{24,}={0,2}", text)):
        try:
            raw = base64.urlsafe_b64decode(blob.replace("+", "-").replace("/", "_") + "==")
        except ValueError:
            continue
        with contextlib.suppress(zlib.error):
            raw = zlib.decompress(raw)
        out.append(raw.decode("utf-8", errors="replace"))
    return out


@dataclass
class Hit:
    canary: str
    encoding: str
    source: str
    where: str


@dataclass
class Corpus:
    """Everything the app said during the sweep, by source."""

    logs: list[str] = field(default_factory=list)
    responses: list[tuple[str, str]] = field(default_factory=list)  # (label, text)
    mails: list[str] = field(default_factory=list)
    rows: list[tuple[str, str]] = field(default_factory=list)  # (table, row)
    other: list[tuple[str, str]] = field(default_factory=list)  # (label, text)

    def sources(self) -> dict[str, list[tuple[str, str]]]:
        responses = self.responses + [
            (f"{label} (decoded)", d) for label, t in self.responses for d in _decoded_blobs(t)
        ]
        rows = self.rows + [
            (f"{table} (decoded)", d) for table, t in self.rows for d in _decoded_blobs(t)
        ]
        return {
            "logs": [(f"log record {i}", text) for i, text in enumerate(self.logs)],
            "responses": responses,
            "mail": [(f"mail {i}", text) for i, text in enumerate(self.mails)]
            + [
                (f"mail {i} (decoded)", d)
                for i, t in enumerate(self.mails)
                for d in _decoded_blobs(t)
            ],
            "database": rows,
            "other": self.other,
        }


def search(corpus: Corpus, canaries: dict[str, str]) -> tuple[list[Hit], dict[str, int]]:
    """Every place a canary shows in any encoding; and how many items each source held."""
    hits: list[Hit] = []
    sizes = {}
    wanted = {
        (name, enc): text
        for name, value in canaries.items()
        for enc, text in needles(value).items()
    }
    for source, items in corpus.sources().items():
        sizes[source] = len(items)
        joined = "\n\0\n".join(text for _, text in items)
        for (name, enc), needle in wanted.items():
            if needle not in joined:
                continue
            for label, text in items:
                if needle in text:
                    hits.append(Hit(name, enc, source, label))
    return hits, sizes


class _Handler(logging.Handler):
    def __init__(self, sink: list[str]):
        super().__init__(level=logging.DEBUG)
        self.sink = sink
        self.formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
        self._standard = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message"}

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.formatter.format(record)
        except Exception as exc:  # noqa: BLE001 - a record that cannot format is still searched
            text = f"{record.name} unformattable {exc!r} {record.msg!r} {record.args!r}"
        extras = {k: v for k, v in vars(record).items() if k not in self._standard}
        self.sink.append(f"{text}\n{extras!r}" if extras else text)


class Capture:
    """Every log record at DEBUG, every response, the mail outbox and every table row."""

    def __init__(self) -> None:
        self.corpus = Corpus()
        self._handler = _Handler(self.corpus.logs)
        self._saved: list = []
        self.flows: list[str] = []

    def __enter__(self) -> Capture:
        root = logging.getLogger()
        for name in (*LOUD, *settings.LOGGING["loggers"]):
            logger = logging.getLogger(name)
            self._saved.append((logger, logger.level, logger.disabled))
            logger.setLevel(logging.DEBUG)
            logger.disabled = False
        # Loggers that do not propagate to the root get the handler too.
        for logger in logging.root.manager.loggerDict.values():
            if isinstance(logger, logging.Logger) and not logger.propagate:
                logger.addHandler(self._handler)
        self._quiet = [(h, h.level) for h in root.handlers]
        for handler, _ in self._quiet:  # the console would only repeat the same records
            handler.setLevel(logging.WARNING)
        root.addHandler(self._handler)
        self._debug_cursor = connection.force_debug_cursor
        connection.force_debug_cursor = True  # django.db.backends logs every query's params
        mail.outbox.clear()
        return self

    def __exit__(self, *exc) -> None:
        root = logging.getLogger()
        root.removeHandler(self._handler)
        for logger in logging.root.manager.loggerDict.values():
            if isinstance(logger, logging.Logger) and self._handler in logger.handlers:
                logger.removeHandler(self._handler)
        for handler, level in self._quiet:
            handler.setLevel(level)
        for logger, level, disabled in self._saved:
            logger.setLevel(level)
            logger.disabled = disabled
        connection.force_debug_cursor = self._debug_cursor

    def client(self, user=None, label: str = "", **kwargs) -> RecordingClient:
        client = RecordingClient(
            self, label or (user.get_username() if user else "anonymous"), **kwargs
        )
        if user is not None:
            client.force_login(user)
        return client

    def add_response(self, label: str, request: dict, response) -> None:
        if getattr(response, "streaming", False):
            body = b"".join(response.streaming_content)
            response.streaming_content = [body]
        else:
            body = response.content
        headers = "\n".join(f"{k}: {v}" for k, v in response.items())
        cookies = response.cookies.output()
        where = f"{label} {request.get('REQUEST_METHOD')} {request.get('PATH_INFO')}"
        text = f"{response.status_code}\n{headers}\n{cookies}\n{body.decode('utf-8', 'replace')}"
        self.corpus.responses.append((where, text))

    def add_text(self, label: str, text: str) -> None:
        self.corpus.other.append((label, text))

    def keep_mail(self) -> None:
        """Move the outbox into the corpus (a flow may empty the outbox before `collect`)."""
        for message in mail.outbox:
            parts = [
                message.subject,
                message.body,
                *(str(c) for c, _ in getattr(message, "alternatives", [])),
            ]
            parts.append(message.message().as_string())
            self.corpus.mails.append("\n".join(parts))
        mail.outbox.clear()

    def collect(self) -> None:
        """The mail outbox and a dump of every table, as text."""
        self.keep_mail()
        qn = connection.ops.quote_name
        with connection.cursor() as cursor:
            self.tables = connection.introspection.table_names(cursor)
            for table in self.tables:
                cursor.execute(f"SELECT * FROM {qn(table)}")  # noqa: S608 - names from the schema
                for row in cursor.fetchall():
                    self.corpus.rows.append((table, "\t".join(map(_text, row))))


def _text(value) -> str:
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode("utf-8", errors="replace")
    return str(value)


class RecordingClient(Client):
    """Django's test client, keeping every response (redirect hops included) for the search."""

    def __init__(self, capture: Capture, label: str, **kwargs):
        super().__init__(**kwargs)
        self._capture = capture
        self._label = label

    def request(self, **request):
        response = super().request(**request)
        self._capture.add_response(self._label, request, response)
        return response
