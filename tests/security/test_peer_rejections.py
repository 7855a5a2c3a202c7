"""Refused peer requests (D511): anyone who reaches a node can send unsigned requests to
``/internal/v1``; each was a "peer request rejected" warning, so a loop of them grew the node log
without bound. Now the first of each reason in a minute is a warning (saying how many it stood
for) and every one is counted in ``cronmesh_peer_requests_rejected_total{reason}``; a peer whose
secret differs still shows up, as a warning of its own reason and in the counter."""

from __future__ import annotations

import asyncio
import time

import aiohttp
from structlog.testing import capture_logs

from nodes import metrics
from nodes.api import signing
from tests.conftest import wait_for

PATH = "/internal/v1/projects/default/runs/1/logs?attempt=1&format=text"
FLOOD = 60


def rejected(reason: str) -> float:
    sample = metrics.REGISTRY.get_sample_value(
        "cronmesh_peer_requests_rejected_total", {"reason": reason.replace(" ", "_")}
    )
    return sample or 0.0


async def test_a_flood_of_unsigned_requests_is_one_warning_and_a_count(cluster):
    node = await cluster.start("pa")
    await wait_for(lambda: node.access.peer_secret is not None, 10, what="peer secret")
    unsigned, bad = rejected("unsigned request"), rejected("bad signature")
    wrong = signing.sign(b"another cluster's secret", "GET", PATH, b"", time.time(), "pb", to="pa")
    with capture_logs() as logs:
        async with aiohttp.ClientSession() as http:

            async def one(headers: dict[str, str]) -> int:
                async with http.get(cluster.url(node, PATH), headers=headers) as r:
                    await r.read()
                    return r.status

            answers = await asyncio.gather(*(one({}) for _ in range(FLOOD)))
            assert set(answers) == {403}, answers
            assert await one(wrong) == 403  # a misconfigured peer, after the flood
    warnings = [e for e in logs if e["event"] == "peer request rejected"]
    assert [w["reason"] for w in warnings] == ["unsigned request", "bad signature"], warnings
    assert rejected("unsigned request") - unsigned == FLOOD
    assert rejected("bad signature") - bad == 1


def test_each_reason_warns_once_a_window_and_says_how_many_it_stood_for():
    log = signing.RejectionLog(every=60)
    assert log.admit("unsigned request", 0.0) == 0
    assert [log.admit("unsigned request", t) for t in (1.0, 30.0, 59.9)] == [None] * 3
    assert log.admit("bad signature", 59.9) == 0  # another reason: its own window
    assert log.admit("unsigned request", 60.0) == 3
    assert log.admit("unsigned request", 61.0) is None
    assert log.admit("unsigned request", 200.0) == 1
