"""#19 item 8: ``format=json`` and ``tail=`` read whole logs into memory (6 concurrent reads took
a node past its 512 Mi limit). Now the JSON form streams, ``tail`` holds at most ``TAIL_BYTES``,
and concurrent reads per node are bounded (429 when full).

A real node runs a job that prints 24 MiB; its log is read from the log store.
"""

from __future__ import annotations

import asyncio
import json
import tracemalloc
from pathlib import Path

import aiohttp
import pytest

from logstore.local import LocalFolderStore
from logstore.tail import last_lines, object_tail
from tests.conftest import api_headers, wait_for

LINE = 1000
LINES = 24_000  # 24 MiB of output
PRINT = (
    'python3 -c \'import sys; line = "x" * 999 + "\\n"; '
    f"[sys.stdout.write(line) for _ in range({LINES})]'"
)


@pytest.fixture
async def big_log(cluster):
    node = await cluster.start(log_reads=1)
    base = "/api/v1/projects/p"
    status, body = await cluster.request(
        "PUT", f"{base}/jobs/loud", json={"name": "loud", "command": PRINT}
    )
    assert status == 201, body
    status, run = await cluster.request("POST", f"{base}/jobs/loud/runs", json={})
    assert status == 201, run

    async def stored() -> bool:
        s, r = await cluster.request("GET", f"{base}/runs/{run['id']}")
        return s == 200 and r["status"] == "succeeded" and r["attempts"][-1]["log"] is not None

    await wait_for(stored, 60, what="the 24 MiB log in the store")
    await wait_for(lambda: not node.logs.spool.ready, 30, what="upload done")
    return node, cluster.url(node, f"{base}/runs/{run['id']}/logs")


async def test_json_form_of_a_big_log_is_streamed(cluster, big_log):
    _, url = big_log
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        frames = 0
        async with aiohttp.ClientSession(headers=api_headers()) as http:
            async with http.get(url + "?format=json") as resp:
                assert resp.status == 200
                assert resp.content_type == "application/json"
                tail = b""
                async for chunk in resp.content.iter_chunked(256 * 1024):
                    frames += (tail[-7:] + chunk).count(b'"stream"')  # a name cut in two
                    tail = (tail + chunk)[-100:]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert frames == LINES
    assert tail.endswith(b"]}")
    # a 24 MiB log (≈ 30 MiB as JSON) went through holding a few MiB at most
    assert peak < 12 * 1024 * 1024, f"peak {peak / 1e6:.1f} MB"


async def test_json_form_is_still_valid_json(cluster, big_log):
    _, url = big_log
    async with aiohttp.ClientSession(headers=api_headers()) as http:
        async with http.get(url + "?format=json&offset=0&length=5000") as resp:
            body = json.loads(await resp.read())
    assert body["frames"][0]["text"].startswith("x")
    assert body["attempt"] == 1


async def test_concurrent_reads_are_bounded_per_node(cluster, big_log):
    """With ``log_reads: 1`` a second read while one is held answers 429 with Retry-After."""
    node, url = big_log
    async with aiohttp.ClientSession(headers=api_headers()) as http:
        held = await http.get(url)  # its body is not read: the node blocks writing it
        try:
            assert held.status == 200
            await wait_for(lambda: node.config.log_reads == 1, 1)
            async with http.get(url + "?tail=5") as resp:
                assert resp.status == 429, await resp.text()
                assert resp.headers["Retry-After"] == "1"
                assert (await resp.json())["error"]["code"] == "too_many_requests"
        finally:
            held.close()

        async def served() -> bool:
            async with http.get(url + "?tail=2") as resp:
                return resp.status == 200 and (await resp.text()).count("\n") == 2

        await wait_for(served, 10, what="the slot to come back")


async def test_tail_holds_at_most_its_byte_cap(tmp_path: Path):
    store = LocalFolderStore(tmp_path)
    await store.put_bytes("k.log", b"".join(b"%06d %s\n" % (i, b"y" * 92) for i in range(20_000)))
    got = await object_tail(store, "k.log", 100_000, max_bytes=10_000)
    assert len(got) <= 10_000 and got.endswith(b"019999 " + b"y" * 92 + b"\n")
    assert got.startswith(b"0")  # whole lines only
    one_line = "z" * 5_000_000
    assert (
        len(last_lines(iter([one_line[i : i + 4096] for i in range(0, 5_000_000, 4096)]), 10, 1000))
        == 1000
    )
    assert last_lines(iter(["a\nb\n", "c"]), 2, 1000) == b"b\nc"


async def test_a_reader_that_goes_away_frees_its_slot(cluster, big_log):
    """With ``log_reads: 1``, each of three readers that leaves mid-answer gives the one slot back:
    the next reader is served (the node notices a closed connection asynchronously, so each
    waits for it with a deadline; a slot that leaked would make every later read a 429)."""
    node, url = big_log
    for _ in range(3):
        async with aiohttp.ClientSession(headers=api_headers()) as http:

            async def admitted(http: aiohttp.ClientSession = http) -> bool:
                resp = await http.get(url)  # its body is not read: the node blocks writing it
                if resp.status != 200:
                    resp.release()
                    assert resp.status == 429, resp.status  # only "full" may be waited out
                    return False
                resp.close()  # goes away mid-answer
                return True

            await wait_for(admitted, 10, what="the slot the previous reader left")
    async with aiohttp.ClientSession(headers=api_headers()) as http:

        async def served() -> bool:
            async with http.get(url + "?tail=1") as r:
                return r.status == 200

        await wait_for(served, 10, what="a free slot")
    await asyncio.sleep(0)
