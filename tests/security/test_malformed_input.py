"""Malformed input found by the secaudit round (D502, D503): each was a traceback in the node log
per request, one of them from anyone who reaches the port.

- A request aiohttp's parser refuses (a URL or header line over 8 KiB, a tab or non-ASCII byte in
  the URL) was answered 400, but logged as an error with a full traceback ("Error handling
  request"): ~2 KB of node log per request, without credentials.
- ``PUT …/secrets/{name}`` parsed its body with its own ``json.loads``, which did not catch
  ``RecursionError``: a 10 KB body nested 5,000 deep was a 500 (every other body goes through
  ``body_json``, which answers 400)."""

from __future__ import annotations

import asyncio
import logging

from cluster.secretbox import new_key

MALFORMED = [
    b"GET /api/v1/cron/preview?expr=" + b"1," * 5000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Long: " + b"v" * 9000 + b"\r\n\r\n",
    b"GET /api/v1/projects/\xef\xbd\x82/jobs HTTP/1.1\r\nHost: x\r\n\r\n",  # a look-alike "b"
    b"GET /api/v1/projects/b\t/jobs HTTP/1.1\r\nHost: x\r\n\r\n",
]


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


async def test_malformed_requests_from_anyone_are_a_400_without_a_traceback(cluster):
    node = await cluster.start()
    host, port = node.config.listen.rsplit(":", 1)
    seen = Records()
    logger = logging.getLogger("aiohttp.server")
    logger.addHandler(seen)
    try:
        for raw in MALFORMED:
            reader, writer = await asyncio.open_connection(host, int(port))
            try:
                writer.write(raw)
                await writer.drain()
                async with asyncio.timeout(10):
                    answer = await reader.read()  # aiohttp closes after a refused request
            finally:
                writer.close()
            assert answer.split(b" ", 2)[1] == b"400", (raw[:60], answer[:200])
    finally:
        logger.removeHandler(seen)
    loud = [r for r in seen.records if r.levelno >= logging.WARNING or r.exc_info]
    assert not loud, [r.getMessage() for r in loud]


async def test_a_deeply_nested_secret_body_is_a_400(cluster, tmp_path):
    key = tmp_path / "secrets.key"
    key.write_text(new_key() + "\n")
    key.chmod(0o600)
    await cluster.start(secrets_key_file=str(key))
    body = '{"value": "v", "x": ' + "[" * 5000 + "]" * 5000 + "}"
    headers = {"Content-Type": "application/json"}
    status, answer = await cluster.request(
        "PUT", "/api/v1/projects/a/secrets/s", data=body, headers=headers
    )
    assert status == 400, answer  # the cluster fixture fails on a logged traceback too
    status, answer = await cluster.request("GET", "/api/v1/projects/a/secrets/s")
    assert status == 404, answer  # nothing stored
