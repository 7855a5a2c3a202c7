"""#19 item 16: slowloris — half-sent requests were held open indefinitely (aiohttp has no
timeout on reading a request's head). A node now closes a connection that has not sent a whole
request line and headers within ``http_head_timeout`` (1 s here).
"""

from __future__ import annotations

import asyncio
import time

from tests.conftest import TEST_ADMIN_TOKEN

DEADLINE = 1.0


async def _closed_after(reader: asyncio.StreamReader, limit: float) -> float:
    """Seconds until the server closes the connection (EOF), failing after ``limit``."""
    start = time.monotonic()
    data = await asyncio.wait_for(reader.read(), limit)  # read() returns at EOF
    assert b"200 OK" not in data
    return time.monotonic() - start


async def _open(cluster, node):
    host, port = node.config.listen.rsplit(":", 1)
    return await asyncio.open_connection(host, int(port))


async def test_half_a_request_line_is_closed_within_the_deadline(cluster):
    node = await cluster.start(http_head_timeout=DEADLINE)
    reader, writer = await _open(cluster, node)
    try:
        writer.write(b"GET /api/v1/projects/p/jo")  # half a request line, then nothing
        await writer.drain()
        took = await _closed_after(reader, DEADLINE + 10)
        assert took >= DEADLINE * 0.5
    finally:
        writer.close()


async def test_headers_sent_one_by_one_too_slowly_are_closed(cluster):
    node = await cluster.start(http_head_timeout=DEADLINE)
    reader, writer = await _open(cluster, node)
    start = time.monotonic()
    try:
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        for i in range(100):  # a header every 0.2 s: each keeps the socket busy, none finishes
            await asyncio.sleep(0.2)
            if reader.at_eof():
                break
            try:
                writer.write(b"X-Slow-%d: y\r\n" % i)
                await writer.drain()
            except ConnectionError:
                break
        await _closed_after(reader, DEADLINE + 10)
        assert time.monotonic() - start < DEADLINE + 10
    finally:
        writer.close()


async def test_a_silent_connection_is_closed(cluster):
    node = await cluster.start(http_head_timeout=DEADLINE)
    reader, writer = await _open(cluster, node)
    try:
        await _closed_after(reader, DEADLINE + 10)
    finally:
        writer.close()


async def test_whole_requests_and_keep_alive_still_work(cluster):
    node = await cluster.start(http_head_timeout=DEADLINE)
    reader, writer = await _open(cluster, node)
    try:
        for _ in range(2):  # two requests on one connection, the second after the deadline
            writer.write(
                b"GET /api/v1/auth/me HTTP/1.1\r\nHost: x\r\n"
                b"Authorization: Bearer " + TEST_ADMIN_TOKEN.encode() + b"\r\n\r\n"
            )
            await writer.drain()
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            assert head.startswith(b"HTTP/1.1 200"), head
            length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
            await reader.readexactly(length)
            await asyncio.sleep(DEADLINE * 1.5)  # idle keep-alive is not a half-sent head
        # a half-sent second request on the kept-alive connection has the same deadline
        writer.write(b"GET /healthz HT")
        await writer.drain()
        await _closed_after(reader, DEADLINE + 10)
    finally:
        writer.close()


async def test_a_body_sent_too_slowly_gets_408_and_the_connection_closes(cluster):
    node = await cluster.start(http_head_timeout=DEADLINE, http_body_timeout=DEADLINE)
    reader, writer = await _open(cluster, node)
    try:
        writer.write(
            b"PUT /api/v1/projects/p/jobs/j HTTP/1.1\r\nHost: x\r\n"
            b"Authorization: Bearer " + TEST_ADMIN_TOKEN.encode() + b"\r\n"
            b'Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"name": '
        )
        await writer.drain()
        start = time.monotonic()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), DEADLINE + 10)
        assert head.startswith(b"HTTP/1.1 408"), head
        assert time.monotonic() - start < DEADLINE + 10
        data = await asyncio.wait_for(reader.read(), 10)  # then the server closes
        assert b"request_timeout" in data
        assert time.monotonic() - start < DEADLINE + 2 + 10
    finally:
        writer.close()
