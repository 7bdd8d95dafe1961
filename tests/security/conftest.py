"""The security suite's report, its canaries and the proxies that count Vault and AWS calls.

Tests add what they observed to `security_report`; at the end of the run the entries are
printed as a "security report" section and written to security-report.txt, each with the
outcome of the test that produced it.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import pytest

from connections_app import devstack
from tests.security.canary import make_canary

SECTIONS = (
    "flows swept", "canary hits", "faults", "hostile inputs", "abuse", "access", "audit tampering",
    "configuration",
)  # fmt: skip
REPORT_FILE = "security-report.txt"


@dataclass
class Entry:
    section: str
    item: str
    outcome: str
    nodeid: str


class SecurityReport:
    def __init__(self) -> None:
        self.entries: list[Entry] = []
        self.results: dict[str, str] = {}  # nodeid -> passed / failed / xfailed / ...

    def lines(self) -> list[str]:
        by_section = defaultdict(list)
        for entry in self.entries:
            by_section[entry.section].append(entry)
        out = []
        for section in SECTIONS:
            entries = by_section.get(section, [])
            out.append(f"{section} ({len(entries)})")
            for entry in entries:
                result = self.results.get(entry.nodeid, "not run to the end")
                out.append(f"  [{result}] {entry.item}: {entry.outcome}")
        return out


_REPORT = SecurityReport()


class _Adder:
    def __init__(self, nodeid: str):
        self.nodeid = nodeid

    def add(self, section: str, item: str, outcome: str) -> None:
        if section not in SECTIONS:
            raise ValueError(f"unknown report section {section!r}")
        _REPORT.entries.append(Entry(section, item, outcome, self.nodeid))


@pytest.fixture
def security_report(request) -> _Adder:
    return _Adder(request.node.nodeid)


def pytest_runtest_logreport(report):
    if hasattr(report, "wasxfail"):
        result = "xfailed" if report.skipped else "XPASS"
    elif report.failed:
        result = "FAILED" if report.when == "call" else f"ERROR in {report.when}"
    elif report.skipped:
        result = "skipped"
    elif report.when == "call":
        result = "passed"
    else:
        return
    if _REPORT.results.get(report.nodeid, "passed") == "passed":  # a failure is kept
        _REPORT.results[report.nodeid] = result


def pytest_terminal_summary(terminalreporter):
    if not _REPORT.entries:
        return
    lines = _REPORT.lines()
    terminalreporter.write_sep("=", "security report")
    for line in lines:
        terminalreporter.write_line(line)
    path = Path(terminalreporter.config.rootpath) / REPORT_FILE
    path.write_text("security report\n\n" + "\n".join(lines) + "\n")
    terminalreporter.write_line(f"(written to {path})")


# ---------------------------------------------------------------------------
# Canaries that change under every encoding the sweep looks for


SWEEP_SECRETS = {
    # path: {key: ascii_only} -- header values must be printable ASCII (HeaderValueSensitive)
    "secret/sweep/basic": {"password": False},
    "secret/sweep/oauth": {"client_secret": False},
    "secret/sweep/apikey": {"api_key": False},
    "secret/sweep/params": {"header": True, "query": False, "body": False},
}


@pytest.fixture(scope="session")
def sweep_canaries(openbao) -> dict[str, str]:
    """reference -> value for every sweep secret, seeded in the session's OpenBao."""
    token = openbao.extra["token"]
    refs = {}
    for path, keys in SWEEP_SECRETS.items():
        values = {key: make_canary(key[:3], ascii_only=ascii) for key, ascii in keys.items()}
        devstack.bao(
            openbao.url, token, "kv", "put", path, *(f"{k}={v}" for k, v in values.items())
        )
        refs.update({f"{path}#{key}": value for key, value in values.items()})
    return refs
