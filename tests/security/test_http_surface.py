"""Issue 19 item 21: small holes in the HTTP surface. Non-ASCII credentials headers answered 500,
a far-future token expiry answered 503 with etcd's text, answers lacked nosniff/CSP, the session
cookie lost ``Secure`` behind a TLS proxy, and a new project inherited the grants of a deleted one
of the same name (D165)."""

from __future__ import annotations

import aiohttp
import pytest

from nodes import signing
from tests.conftest import api_headers

JOB = {"name": "j", "command": "true"}


async def raw(cluster, method: str, path: str, headers: dict[str, str], **kw) -> tuple[int, str]:
    async with aiohttp.ClientSession() as http:
        async with http.request(method, cluster.url(None, path), headers=headers, **kw) as r:
            return r.status, await r.text()


async def login(cluster, user: str, password: str, **headers: str):
    jar = aiohttp.CookieJar(unsafe=True)
    http = aiohttp.ClientSession(cookie_jar=jar)
    url = cluster.url(None, "/api/v1/auth/login")
    async with http.post(url, json={"username": user, "password": password}, headers=headers) as r:
        assert r.status == 200, await r.text()
        return http, await r.json(), r.cookies["cronmesh_session"]


async def make_user(cluster, name: str, roles: dict[str, str]) -> None:
    body = {"name": name, "password": "correct horse", "roles": roles}
    status, answer = await cluster.request("POST", "/api/v1/users", json=body)
    assert status == 201, answer


NON_ASCII = "\u00e9t\u00e9-\u2603"


async def test_non_ascii_credential_headers_are_refused_not_500(cluster):
    await cluster.start()
    await make_user(cluster, "ana", {"a": "editor"})
    http, _, _ = await login(cluster, "ana", "correct horse")
    async with http:
        url = cluster.url(None, "/api/v1/projects/a/jobs")
        # raw bytes in the header (aiohttp encodes str headers as UTF-8 on the wire)
        async with http.post(url, json=JOB, headers={"X-CSRF-Token": NON_ASCII}) as r:
            assert r.status == 403 and "CSRF" in await r.text()
    for headers in (
        {"Authorization": f"Bearer {NON_ASCII}"},
        {"Cookie": f"cronmesh_session={NON_ASCII}"},
    ):
        status, text = await raw(cluster, "GET", "/api/v1/auth/me", headers)
        assert status == 401, (headers, status, text)
    signed = signing.sign(b"x" * 32, "GET", "/internal/v1/x", b"", 0.0, "n1", to="n1")
    for name in (signing.H_SIG, signing.H_NONCE, signing.H_NODE):
        bad = {**signed, name: NON_ASCII}
        status, text = await raw(cluster, "GET", "/internal/v1/projects/a/runs/1/logs", bad)
        assert 400 <= status < 500, (name, status, text)


@pytest.mark.parametrize(
    "expires_at", ["2999-01-01T00:00:00Z", "9999-12-31T23:59:59Z", "2020-01-01T00:00:00Z"]
)
async def test_far_future_or_past_token_expiry_is_a_400_naming_the_field(cluster, expires_at):
    await cluster.start()
    status, body = await cluster.request(
        "POST", "/api/v1/users/admin/tokens", json={"expires_at": expires_at}
    )
    assert status == 400 and body["error"]["field"] == "expires_at", body
    assert "etcdserver" not in str(body)


async def test_answers_carry_nosniff_and_a_csp(cluster):
    await cluster.start()
    async with aiohttp.ClientSession(headers=api_headers()) as http:
        for path in ("/api/v1/auth/me", "/healthz", "/metrics", "/api/v1/nope", "/ui/"):
            async with http.get(cluster.url(None, path)) as r:
                assert r.headers["X-Content-Type-Options"] == "nosniff", path
                csp = r.headers["Content-Security-Policy"]
                if path.startswith("/ui"):
                    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
                else:
                    assert csp.startswith("default-src 'none'") and "sandbox" in csp, path


async def test_the_cookie_is_secure_behind_a_trusted_tls_proxy(cluster):
    await cluster.start(trusted_proxies=["127.0.0.0/8"])
    await make_user(cluster, "tom", {})
    http, _, cookie = await login(cluster, "tom", "correct horse", **{"X-Forwarded-Proto": "https"})
    await http.close()
    assert cookie["secure"], cookie  # the proxy spoke TLS to the browser
    http, _, cookie = await login(cluster, "tom", "correct horse")
    await http.close()
    assert not cookie["secure"]


async def test_a_forwarded_proto_from_an_untrusted_peer_is_ignored(cluster):
    await cluster.start()
    await make_user(cluster, "tom", {})
    http, _, cookie = await login(cluster, "tom", "correct horse", **{"X-Forwarded-Proto": "https"})
    await http.close()
    assert not cookie["secure"]


async def test_a_new_project_does_not_inherit_a_deleted_ones_grants(cluster):
    """Attack: bob was an editor of the old project "pay"; it was deleted and a new "pay" made for
    another team. bob's grant still named "pay", so he could edit the new team's jobs."""
    await cluster.start()
    await make_user(cluster, "bob", {"pay": "editor", "web": "viewer"})
    assert (await cluster.request("POST", "/api/v1/projects", json={"name": "pay"}))[0] == 201
    assert (await cluster.request("DELETE", "/api/v1/projects/pay"))[0] == 204
    status, user = await cluster.request("GET", "/api/v1/users/bob")
    assert user["roles"] == {"web": "viewer"}, user
    assert (await cluster.request("POST", "/api/v1/projects", json={"name": "pay"}))[0] == 201
    http, _, _ = await login(cluster, "bob", "correct horse")
    async with http:
        url = cluster.url(None, "/api/v1/projects/pay/jobs")
        async with http.get(url) as r:
            assert r.status == 403
    # deleting it again (e.g. a retry) answers 404 once nothing is left
    assert (await cluster.request("DELETE", "/api/v1/projects/pay"))[0] == 204
    assert (await cluster.request("DELETE", "/api/v1/projects/pay"))[0] == 404
