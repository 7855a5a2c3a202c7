"""#19 items 13 and 14: node-to-node calls.

13. Level 0 opened ``/internal/v1`` (every project's logs) to anyone who reached the node: now a
    node refuses to start at level 0 unless it listens on loopback, and warns loudly when it does.
14. A signed peer request could be replayed to *another* node within 30 s (each node keeps its own
    nonces): the receiver's id is now signed; a non-finite timestamp (``nan`` passed the window
    check) is refused (D158).
"""

from __future__ import annotations

import hashlib
import hmac
import subprocess
import sys
import time

import aiohttp
import pytest
from structlog.testing import capture_logs

from cluster.errors import InvalidInput
from nodes.api import signing
from nodes.config_sources import load_config
from nodes.devtools.embedded import free_port
from tests.conftest import ROOT, node_env, wait_for

PATH = "/internal/v1/projects/default/runs/1/logs?attempt=1&format=text"


@pytest.mark.parametrize("listen", ["0.0.0.0:{port}", "[::]:{port}", "10.1.2.3:{port}"])
def test_a_node_refuses_level_zero_off_loopback(etcd_server, listen):
    port = free_port()
    res = subprocess.run(
        [
            *(sys.executable, "-m", "nodes.cli", "node", "--etcd", etcd_server.endpoint),
            *("--listen", listen.format(port=port), "--security-level", "0"),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=node_env(),
        timeout=60,
    )
    assert res.returncode == 2, res
    assert "security_level 0 leaves /internal/v1 open" in res.stderr
    with pytest.raises(OSError):  # it never listened
        import socket

        socket.create_connection(("127.0.0.1", port), timeout=1).close()


@pytest.mark.parametrize("listen", ["127.0.0.1:8080", "127.9.9.9:1", "[::1]:80", "localhost:80"])
def test_level_zero_is_allowed_on_loopback(listen):
    assert load_config({"listen": listen, "security_level": 0}).security_level == 0


def test_level_zero_off_loopback_is_a_config_error_in_every_source():
    with pytest.raises(InvalidInput, match="loopback"):
        load_config({}, env={"CRONMESH_LISTEN": "0.0.0.0:8080", "CRONMESH_SECURITY_LEVEL": "0"})
    with pytest.raises(InvalidInput, match="loopback"):
        load_config({"listen": "node.example:8080", "security_level": 0})


async def test_level_zero_on_loopback_warns_loudly(cluster):
    with capture_logs() as logs:
        await cluster.start("dev0", security_level=0)
    assert any("SECURITY LEVEL 0" in e["event"] for e in logs), logs


async def send(url: str, headers: dict[str, str]) -> tuple[int, str]:
    async with aiohttp.ClientSession() as http:
        async with http.get(url, headers=headers) as r:
            return r.status, await r.text()


async def test_a_signed_request_cannot_be_replayed_to_another_node(cluster):
    a = await cluster.start("pa")
    b = await cluster.start("pb")
    await wait_for(
        lambda: a.access.peer_secret is not None and b.access.peer_secret is not None,
        10,
        what="peer secrets",
    )
    assert a.access.peer_secret == b.access.peer_secret  # one cluster secret
    # what pb sends to pa (captured on the wire by the attacker)
    captured = b.access.sign("GET", PATH, b"", to="pa")
    status, text = await send(cluster.url(a, PATH), captured)
    assert status == 404, text  # authentic: reached pa's handler (no such log)
    # replayed to pb itself, or to another node that has not seen the nonce: refused
    status, text = await send(cluster.url(b, PATH), captured)
    assert status == 403 and "addressed to another node" in text, text
    # re-addressing it breaks the signature
    status, text = await send(cluster.url(b, PATH), {**captured, signing.H_TO: "pb"})
    assert status == 403 and "bad signature" in text, text
    # and the original target still sees the replay
    status, text = await send(cluster.url(a, PATH), captured)
    assert status == 403 and "replayed" in text, text


@pytest.mark.parametrize("ts", ["nan", "NaN", "inf", "-inf", "1e999"])
async def test_non_finite_timestamps_are_refused(cluster, ts):
    a = await cluster.start("pa")
    await wait_for(lambda: a.access.peer_secret is not None, 10, what="peer secret")
    secret = a.access.peer_secret
    nonce = "ab" * 16
    msg = signing._message("GET", PATH, b"", ts, nonce, "pb", "pa")
    headers = {
        signing.H_TIME: ts,
        signing.H_NONCE: nonce,
        signing.H_SIG: hmac.new(secret, msg, hashlib.sha256).hexdigest(),
        signing.H_NODE: "pb",
        signing.H_TO: "pa",
    }
    status, text = await send(cluster.url(a, PATH), headers)
    assert status == 403 and "bad timestamp" in text, text


def test_the_receiver_is_part_of_the_signature():
    secret, now = b"s" * 32, time.time()
    h = signing.sign(secret, "GET", PATH, b"", now, "n1", to="n2")
    assert signing.verify(secret, "GET", PATH, b"", h, now, signing.NonceCache(), me="n2") is None
    for me in ("n3", ""):
        reason = signing.verify(secret, "GET", PATH, b"", h, now, signing.NonceCache(), me=me)
        assert reason == "request addressed to another node"
