"""A log reader that goes away before the answer's headers go out ends the read quietly (D164).

Found by CI (stop 32): a browser test navigated away while a stored log's first chunk was read;
the headers then met a closed connection and the node logged "unhandled error in API handler"
(the ``cluster`` fixture fails a test whose node logs one). Each streamed form is held here until
its client has gone, so the headers always meet a closed connection; the node must end the read
without an error and go on serving.
"""

from __future__ import annotations

import asyncio
import urllib.parse
from typing import Any

import aiohttp
import pytest

from nodes.api.logs import LogsApi
from tests.conftest import api_headers, wait_for

BASE = "/api/v1/projects/p"


async def stored_log(cluster: Any) -> tuple[Any, str]:
    node = await cluster.start()
    status, body = await cluster.request(
        "PUT", f"{BASE}/jobs/hi", json={"name": "hi", "command": "echo hello"}
    )
    assert status == 201, body
    status, run = await cluster.request("POST", f"{BASE}/jobs/hi/runs", json={})
    assert status == 201, run

    async def stored() -> bool:
        s, r = await cluster.request("GET", f"{BASE}/runs/{run['id']}")
        return s == 200 and r["status"] == "succeeded" and r["attempts"][-1]["log"] is not None

    await wait_for(stored, 60, what="the log in the store")
    await wait_for(lambda: not node.logs.spool.ready, 30, what="the upload")
    return node, cluster.url(node, f"{BASE}/runs/{run['id']}/logs")


@pytest.mark.parametrize(
    ("query", "form"), [("", "_send"), ("?format=json", "_send_json"), ("?follow=1", "_stream")]
)
async def test_a_reader_gone_before_the_headers_ends_the_read_quietly(
    cluster, monkeypatch, query, form
):
    node, url = await stored_log(cluster)
    kept = LogsApi.__dict__[form]  # the staticmethod itself, to put back
    original = kept.__func__
    entered, answered = asyncio.Event(), asyncio.Event()

    async def held(request: Any, *args: Any, **kwargs: Any) -> Any:
        entered.set()
        await wait_for(
            lambda: request.transport is None or request.transport.is_closing(),
            10,
            what="the client to go",
        )
        try:
            return await original(request, *args, **kwargs)
        finally:
            answered.set()

    monkeypatch.setattr(LogsApi, form, staticmethod(held))
    parts = urllib.parse.urlsplit(url + query)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    head = [f"GET {parts.path}?{parts.query} HTTP/1.1", f"Host: {parts.netloc}"]
    head += [f"{k}: {v}" for k, v in api_headers().items()]
    writer.write(("\r\n".join(head) + "\r\n\r\n").encode())
    await writer.drain()
    await asyncio.wait_for(entered.wait(), 30)
    writer.close()  # gone before the answer's first byte
    await writer.wait_closed()
    await asyncio.wait_for(answered.wait(), 30)
    assert await reader.read() == b""  # nothing was sent on the closed connection
    monkeypatch.setattr(LogsApi, form, kept)
    async with aiohttp.ClientSession(headers=api_headers()) as http:  # the node goes on
        async with http.get(url + ("?format=json" if form == "_send_json" else "")) as resp:
            assert resp.status == 200
            assert "hello" in await resp.text()
    # and the fixture checks that the node logged no unhandled error
