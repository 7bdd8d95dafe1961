"""A flood of Check requests must not slow an approver down: checks are bounded (length, a
per-user budget) and run on Vault capacity of their own, apart from approvals."""

import threading
import time

import pytest
from django.test import Client
from django.urls import reverse

from connections_app import roles, services

# Threads with their own database connections: the data must be committed.
pytestmark = [pytest.mark.usefixtures("servers"), pytest.mark.django_db(transaction=True)]


def test_a_flood_of_checks_leaves_the_approvers_page_quick(
    requester, user_factory, approver_client, make_document, settings, security_report
):
    """Many requesters checking at once (each within their budget) while an approver opens a
    request: the page renders in under a second."""
    request = services.request_create(requester=requester, document=make_document("API_KEY"))
    floods = [user_factory(f"flood{i}", groups=[roles.REQUESTERS]) for i in range(6)]
    stop = threading.Event()
    sent = []

    def flood(user, huge):
        from django.db import connections

        # As the hostile review did: references of 100 KB each, and ordinary ones.
        ref = "secret/" + "a" * 100_000 + "#k" if huge else "secret/canary/oauth#x"
        try:
            client = Client()
            client.force_login(user)
            while not stop.is_set():
                answer = client.post(reverse("reference_check"), {"reference": ref})
                sent.append(answer.status_code)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=flood, args=(u, i % 2)) for i, u in enumerate(floods)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(0.5)
        times = []
        for _ in range(3):
            started = time.perf_counter()
            response = approver_client.get(reverse("request_detail", args=[request.pk]))
            times.append(time.perf_counter() - started)
            assert response.status_code == 200
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
    security_report.add(
        "abuse",
        "Check flood (6 requesters in a loop, half with 100 KB references) while an approver "
        "opens a request",
        f"{len(sent)} checks answered ({sent.count(429)} over budget); the approver's page took "
        f"{', '.join(f'{t:.2f}' for t in times)} s",
    )
    assert sent and max(times) < 1.0
