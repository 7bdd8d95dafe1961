"""A real task worker: `manage.py qcluster` in its own process, on the ORM broker, against the
test database. A sweep killed midway records nothing; the next run does it all."""

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
import requests
from django.db import connection

from connections_app.models import Connection, Sweep, Target
from tests.faults import FaultProxy, aws_target

pytestmark = [pytest.mark.usefixtures("servers"), pytest.mark.django_db(transaction=True)]
ROOT = Path(__file__).resolve().parent.parent
OTHER = "313131313131"


def _database_url() -> str:
    db = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{Path(db['NAME']).resolve()}"
    return f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"


def _cluster(openbao, aws_url: str, log: Path, **extra) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "VAULT_"))}
    env.update(
        DJANGO_SETTINGS_MODULE="config.settings_test",
        Q_CLUSTER_SYNC="0",
        Q_WORKERS="1",
        Q_TIMEOUT_SECONDS="8",
        Q_RETRY_SECONDS="10",  # a task a killed worker held is delivered again after this
        SWEEP_LEASE_SECONDS="3",  # and the lease it held runs out after this
        DATABASE_URL=_database_url(),
        VAULT_ADDR=openbao.url,
        VAULT_TOKEN=openbao.extra["token"],
        AWS_ENDPOINT_URL=aws_url,
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",  # noqa: S105 - moto's dummy credentials
        AWS_DEFAULT_REGION="us-east-1",
        AWS_REGION="us-east-1",
        **extra,
    )
    return subprocess.Popen(
        [sys.executable, "manage.py", "qcluster"],
        cwd=ROOT,
        env=env,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def _kill(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)  # no goodbye: as a crashed machine
        proc.wait(10)


def _wait(predicate, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(autouse=True)
def _show_the_log_on_failure(tmp_path):
    """The workers' output, printed after the test: pytest shows it when the test fails."""
    yield
    log = tmp_path / "qcluster.log"
    if log.exists():
        print(log.read_text()[-4000:])


def test_a_sweep_killed_midway_records_nothing_and_the_next_run_does_it_all(
    openbao, moto, monkeypatch, tmp_path
):
    from django_q.conf import Conf
    from django_q.tasks import async_task

    role = f"arn:aws:iam::{OTHER}:role/worker-{uuid.uuid4().hex[:6]}"
    requests.post(
        f"{moto.url}/moto-ext/sts/role", json={"role_arn": role, "external_id": "worker-ext"}
    )
    requests.post(f"{moto.url}/moto-ext/reset", json={"account_id": OTHER, "region": "us-east-1"})
    seeded = requests.post(
        f"{moto.url}/moto-ext/connections/seed",
        json={"count": 250, "prefix": "worker-", "account_id": OTHER},
        timeout=30,
    ).json()
    assert seeded["created"] == 250
    target = Target.objects.create(name="worker", region="us-east-1", role_arn=role,
                                   external_id="worker-ext")  # fmt: skip
    with FaultProxy(moto.url) as proxy:
        # Each list page takes a second: the sweep is midway for a while.
        proxy.rules.append(aws_target("ListConnections", ("delay", 1.0)))
        monkeypatch.setattr(Conf, "SYNC", False)  # this process only enqueues
        async_task("connections_app.tasks.sweep", target.pk, task_name="sweep worker")
        log = tmp_path / "qcluster.log"
        cluster = _cluster(openbao, proxy.url, log)
        try:
            _wait(lambda: proxy.targets("ListConnections") >= 2, 60, "the sweep to start")
        finally:
            _kill(cluster)
        # Midway: nothing of it is recorded.
        assert not Sweep.objects.filter(target=target).exists()
        assert not Connection.objects.filter(target=target).exists()
        assert Target.objects.get(pk=target.pk).sweep_owner  # the lease it held

        proxy.rules.clear()
        cluster = _cluster(openbao, proxy.url, log)  # the broker delivers the task again
        try:
            _wait(lambda: Sweep.objects.filter(target=target).exists(), 90, "the next run")
        finally:
            _kill(cluster)
    swept = Sweep.objects.get(target=target)
    assert swept.ok, swept.error
    assert swept.figures["listed"] == 250 and swept.figures["unmanaged_found"] == 250
    assert Connection.objects.filter(target=target, managed=False).count() == 250
    assert Target.objects.get(pk=target.pk).sweep_owner == ""


def test_a_sender_killed_between_sending_and_marking_sends_once_more_with_the_same_id(
    openbao, moto, monkeypatch, tmp_path, smtp, requester, approver, make_document
):
    from django_q.conf import Conf
    from django_q.tasks import async_task

    from connections_app import services
    from connections_app.models import Notification

    services.request_create(requester=requester, document=make_document())
    [note] = Notification.objects.filter(recipient=approver)
    monkeypatch.setattr(Conf, "SYNC", False)
    mail = {
        "EMAIL_URL": f"smtp://127.0.0.1:{smtp.port}",
        "NOTIFY_SEND_LEASE_SECONDS": "2",  # a dead sender's claim runs out after this
    }
    log = tmp_path / "qcluster.log"
    smtp.hold = threading.Event()  # the message is in, the answer never reaches the sender
    async_task("connections_app.tasks.send_notifications", task_name="send")
    cluster = _cluster(openbao, moto.url, log, **mail)
    try:
        assert smtp.received.wait(60), "the worker never sent"
    finally:
        _kill(cluster)
    smtp.hold.set()
    note.refresh_from_db()
    assert note.status == Notification.SENDING and len(smtp.messages) == 1

    time.sleep(2.5)
    async_task("connections_app.tasks.send_notifications", task_name="send again")
    async_task("connections_app.tasks.send_notifications", task_name="and again")
    cluster = _cluster(openbao, moto.url, log, **mail)
    try:
        _wait(lambda: Notification.objects.get(pk=note.pk).status == "sent", 60, "the resend")
        time.sleep(2)  # the third task finds nothing to send
    finally:
        _kill(cluster)
    assert len(smtp.messages) == 2
    assert smtp.message_ids() == [note.message_id, note.message_id]
