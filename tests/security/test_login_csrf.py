"""Issue 19 item 19: login CSRF. Another site could make a visitor's browser log in to the
attacker's account with a cross-site ``text/plain`` form POST (no CORS preflight), so whatever the
victim then did was done as, and visible to, the attacker. Login now needs ``application/json``
and refuses what the browser marks as cross-site (D167)."""

from __future__ import annotations

import json

import aiohttp
import pytest

CREDS = {"username": "mallory", "password": "mallory's password"}


@pytest.fixture
async def login_url(cluster):
    await cluster.start()
    status, body = await cluster.request(
        "POST", "/api/v1/users", json={"name": "mallory", "password": CREDS["password"]}
    )
    assert status == 201, body
    return cluster.url(None, "/api/v1/auth/login")


async def post(url: str, data: str, **headers: str) -> tuple[int, dict]:
    async with aiohttp.ClientSession() as anon:
        async with anon.post(url, data=data, headers=headers) as r:
            return r.status, await r.json()


async def test_a_cross_site_text_plain_login_is_refused(login_url):
    # what <form enctype="text/plain"> on another site sends: a JSON-looking body, no preflight
    for ctype in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data"):
        status, body = await post(login_url, json.dumps(CREDS), **{"Content-Type": ctype})
        assert status == 415 and body["error"]["field"] == "Content-Type", (ctype, body)
    status, body = await post(login_url, json.dumps(CREDS))
    assert status == 415


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "https://evil.example"},
        {"Origin": "null"},  # sandboxed frames, data: and file: pages
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "cross-site", "Origin": "http://evil.example:80"},
    ],
)
async def test_a_login_the_browser_marks_cross_site_is_refused(login_url, headers):
    status, body = await post(login_url, json.dumps(CREDS), **headers, **JSON)
    assert status == 403, body
    assert body["error"]["field"] in ("Origin", "Sec-Fetch-Site")


JSON = {"Content-Type": "application/json"}


async def test_same_origin_and_non_browser_logins_work(login_url):
    host = login_url.split("/")[2]
    for headers in (
        {},  # the CLI, curl
        {"Origin": f"http://{host}", "Sec-Fetch-Site": "same-origin"},  # the web UI
        {"Content-Type": "application/json; charset=utf-8"},
    ):
        status, body = await post(login_url, json.dumps(CREDS), **{**JSON, **headers})
        assert status == 200, (headers, body)
