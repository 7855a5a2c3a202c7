"""Issue 19 items 4 and 5: webhooks as a way into the cluster's network (SSRF), and webhook answers
as a way to fill the leader's memory. A real node and etcd; local HTTP servers stand in for the
inside services (etcd's client port, a node's API) and for attackers' receivers."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import time

import pytest
from aiohttp import web

from cluster.notify import verify
from nodes import webhooks
from nodes.devtools.embedded import free_port
from tests.api_helpers import JOBS, run_done
from tests.conftest import wait_for
from tests.integration.test_notifications import Receiver, notification_counts

DEFAULTS = "/api/v1/projects/default/notifications"
SETTINGS = "/api/v1/settings/webhooks"


def hook_job(name: str, url: str, **hook) -> dict:
    return {
        "name": name,
        "command": "exit 1",
        "notifications": [{"on": ["failure"], "webhook": {"url": url, **hook}}],
    }


async def counts(cluster) -> dict:
    _, text = await cluster.request("GET", "/metrics")
    return notification_counts(text)


class Inside:
    """Stands in for an inside service (etcd's client port): records every request it gets."""

    def __init__(self) -> None:
        self.port = free_port()
        self.hits: list[str] = []
        self._runner: web.AppRunner | None = None

    async def _any(self, request: web.Request) -> web.Response:
        self.hits.append(f"{request.method} {request.path}")
        return web.json_response({"defragmented": True})

    async def __aenter__(self) -> Inside:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._any)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()


async def test_editor_cannot_point_a_webhook_at_etcd_or_inside_addresses(cluster, etcd_server):
    """The review's attack: a webhook to etcd's defragment endpoint. Refused when written, with
    the field named and nothing stored; so are the other inside destinations."""
    node = await cluster.start()
    etcd_url = f"{etcd_server.endpoint}/v3/maintenance/defragment"
    inside = [
        etcd_url,
        f"http://{node.config.listen}/api/v1/projects/default/jobs",  # the node itself
        "http://localhost:2379/v3/maintenance/defragment",
        "http://[::1]:2379/",
        "http://[::ffff:127.0.0.1]:2379/",
        "http://169.254.169.254/latest/meta-data/iam/",  # cloud metadata
        "http://10.1.2.3/",
        "http://192.168.0.10:8080/",
        "http://100.64.0.1/",  # carrier-grade NAT
        "http://0.0.0.0:2379/",
        "http://2130706433:2379/",  # 127.0.0.1 as one number
        "http://0x7f.1:2379/",
        "http://user:pw@example.com/",
        "ftp://example.com/",
    ]
    for i, url in enumerate(inside):
        status, body = await cluster.request("POST", JOBS, json=hook_job(f"j{i}", url))
        assert status == 400, (url, body)
        assert body["error"]["field"] == "notifications.0.webhook.url", (url, body)
        status, _ = await cluster.request("GET", f"{JOBS}/j{i}")
        assert status == 404, url  # nothing half-written
    # every way of writing rules is checked: PUT, PATCH, project defaults
    status, _ = await cluster.request("PUT", f"{JOBS}/p", json=hook_job("p", etcd_url))
    assert status == 400
    status, _ = await cluster.request("POST", JOBS, json={"name": "q", "command": "true"})
    assert status == 201
    status, body = await cluster.request(
        "PATCH", f"{JOBS}/q", json={"notifications": [{"webhook": {"url": etcd_url}}]}
    )
    assert status == 400 and body["error"]["field"] == "notifications.0.webhook.url", body
    status, body = await cluster.request(
        "PUT", DEFAULTS, json={"rules": [{"webhook": {"url": etcd_url}}]}
    )
    assert status == 400 and body["error"]["field"] == "rules.0.webhook.url", body


async def test_custom_headers_cannot_reframe_or_redirect_the_request(cluster):
    await cluster.start()
    for name in ("Host", "Content-Length", "Transfer-Encoding", "connection", "Upgrade"):
        job = hook_job("h", "https://hooks.example.com/x", headers={name: "evil"})
        status, body = await cluster.request("POST", JOBS, json=job)
        assert status == 400, (name, body)
        assert body["error"]["field"] == f"notifications.0.webhook.headers.{name}", body
    job = hook_job("h", "https://hooks.example.com/x", secret_env="CRONMESH_PEER_SECRET")
    status, body = await cluster.request("POST", JOBS, json=job)
    assert status == 400, body  # the node's own credentials are no signing keys
    assert body["error"]["field"] == "notifications.0.webhook.secret_env", body
    job = hook_job("h", "https://hooks.example.com/x", headers={"X-Token": "a\r\nHost: evil"})
    status, body = await cluster.request("POST", JOBS, json=job)
    assert status == 400 and "X-Token" in body["error"]["field"], body
    status, _ = await cluster.request("GET", f"{JOBS}/h")
    assert status == 404


async def test_allow_list_opens_exactly_what_it_names(cluster, etcd_server):
    """A cluster admin allow-lists one receiver (address and port): it works, etcd's port on the
    same address stays refused; the allow-list itself is validated."""
    await cluster.start()
    status, body = await cluster.request("PUT", SETTINGS, json={"allow": ["not a cidr!"]})
    assert status == 400 and body["error"]["field"] == "allow", body
    async with Receiver() as hook:
        status, _ = await cluster.request(
            "PUT", SETTINGS, json={"allow": [f"127.0.0.1:{hook.port}"]}
        )
        assert status == 200
        status, body = await cluster.request("POST", JOBS, json=hook_job("ok", hook.url))
        assert status == 201, body
        etcd_url = f"{etcd_server.endpoint}/v3/maintenance/defragment"
        status, body = await cluster.request("POST", JOBS, json=hook_job("no", etcd_url))
        assert status == 400, body
        _, run = await cluster.request("POST", f"{JOBS}/ok/runs", json={})
        await run_done(cluster, run["id"])
        await wait_for(lambda: hook.delivered(), 30, what="allow-listed receiver reached")


async def test_send_time_check_refuses_rules_that_got_past_the_write(cluster, etcd, keys):
    """Rules written while an address was allowed (or straight into etcd) are checked again when
    sending: the inside service never sees a request, the refusal is counted, not retried."""
    await cluster.start()
    async with Inside() as inner:
        url = f"http://127.0.0.1:{inner.port}/v3/maintenance/defragment"
        await cluster.request("PUT", SETTINGS, json={"allow": ["127.0.0.1/32"]})
        status, body = await cluster.request("POST", JOBS, json=hook_job("late", url, retries=5))
        assert status == 201, body
        status, _ = await cluster.request("PUT", SETTINGS, json={"allow": []})
        assert status == 200
        await asyncio.sleep(webhooks.GUARD_TTL)  # the leader's cached guard expires
        base = (await counts(cluster)).get(("webhook", "refused"), 0)
        started = time.monotonic()
        _, run = await cluster.request("POST", f"{JOBS}/late/runs", json={})
        await run_done(cluster, run["id"])

        async def refused():
            return (await counts(cluster)).get(("webhook", "refused"), 0) >= base + 1

        await wait_for(refused, 30, what="refusal counted")
        assert time.monotonic() - started < 15  # no retries with backoff for a refusal
        assert inner.hits == []


async def test_redirect_into_the_cluster_is_refused(cluster):
    """An allowed receiver answers 307 to an inside address: the redirect is checked like the
    first URL and not followed."""
    await cluster.start()
    async with Inside() as inner:
        outer_port = free_port()
        target = f"http://127.0.0.1:{inner.port}/v3/maintenance/defragment"
        hops: list[str] = []

        async def redirect(request: web.Request) -> web.Response:
            hops.append(request.path)
            raise web.HTTPTemporaryRedirect(target)

        app = web.Application()
        app.router.add_post("/hook", redirect)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", outer_port).start()
        try:
            await cluster.request("PUT", SETTINGS, json={"allow": [f"127.0.0.1:{outer_port}"]})
            job = hook_job("redir", f"http://127.0.0.1:{outer_port}/hook", retries=0)
            status, body = await cluster.request("POST", JOBS, json=job)
            assert status == 201, body
            base = (await counts(cluster)).get(("webhook", "refused"), 0)
            _, run = await cluster.request("POST", f"{JOBS}/redir/runs", json={})
            await run_done(cluster, run["id"])

            async def refused():
                return (await counts(cluster)).get(("webhook", "refused"), 0) >= base + 1

            await wait_for(refused, 30, what="redirect refused")
            assert hops == ["/hook"] and inner.hits == []
        finally:
            await runner.cleanup()


async def test_dns_rebinding_after_a_public_answer(cluster, monkeypatch):
    """A name resolves to a public address when the rule is written and to loopback when the
    leader sends: the send-time lookup is the one checked, and the one connected to."""
    await cluster.start()
    answers = iter(["93.184.216.34", "127.0.0.1", "127.0.0.1", "127.0.0.1"])
    seen: list[str] = []

    async def rebinding(host: str, port: int):
        ip = next(answers, "127.0.0.1")
        seen.append(ip)
        return [ipaddress.ip_address(ip)]

    monkeypatch.setattr(webhooks, "LOOKUP", rebinding)
    async with Inside() as inner:
        url = f"http://rebind.example:{inner.port}/v3/maintenance/defragment"
        status, body = await cluster.request("POST", JOBS, json=hook_job("dns", url, retries=0))
        assert status == 201, body  # the write saw a public address
        base = (await counts(cluster)).get(("webhook", "refused"), 0)
        _, run = await cluster.request("POST", f"{JOBS}/dns/runs", json={})
        await run_done(cluster, run["id"])

        async def refused():
            return (await counts(cluster)).get(("webhook", "refused"), 0) >= base + 1

        await wait_for(refused, 30, what="rebound name refused at send time")
        assert seen[:2] == ["93.184.216.34", "127.0.0.1"]
        assert inner.hits == []


async def test_allow_listed_name_connects_to_the_address_its_lookup_checked(
    cluster, monkeypatch, etcd, keys
):
    """The connection goes to what the guarded lookup answered (the connector never resolves the
    name again), with the name kept in the Host header and the body signed as usual."""
    await cluster.start()
    lookups: list[str] = []

    async def fixed(host: str, port: int):
        lookups.append(host)
        return [ipaddress.ip_address("127.0.0.1")]

    monkeypatch.setattr(webhooks, "LOOKUP", fixed)
    async with Receiver() as hook:
        await etcd.put(keys.webhook_settings(), json.dumps({"allow": ["hooks.internal"]}))
        url = f"http://hooks.internal:{hook.port}/hook"
        status, body = await cluster.request("POST", JOBS, json=hook_job("n", url, secret="k"))
        assert status == 201, body
        _, run = await cluster.request("POST", f"{JOBS}/n/runs", json={})
        await run_done(cluster, run["id"])
        delivered = await wait_for(lambda: hook.delivered(), 30, what="delivered by name")
        headers, _ = delivered[0]
        assert headers["Host"] == f"hooks.internal:{hook.port}"
        raw = hook.requests[0][1]
        assert verify("k", headers["X-Cronmesh-Timestamp"], raw, headers["X-Cronmesh-Signature"])
        assert "hooks.internal" in lookups


@pytest.mark.parametrize("mode", ["huge", "drip"])
async def test_a_webhook_answer_cannot_fill_or_hold_the_leader(cluster, etcd, keys, mode):
    """Item 5: a receiver answers 500 with an endless body (the review's 400 MiB answer), or
    drips it one byte a second. The leader reads a few hundred bytes and hangs up; the attempt
    ends within the hook's timeout."""
    await cluster.start()
    sent = [0]
    port = free_port()

    async def endless(request: web.Request) -> web.StreamResponse:
        await request.read()
        resp = web.StreamResponse(status=500)
        resp.content_length = 400 * 1024 * 1024
        await resp.prepare(request)
        chunk = b"x" * (64 * 1024 if mode == "huge" else 1)
        try:
            while sent[0] < 400 * 1024 * 1024:
                await resp.write(chunk)
                sent[0] += len(chunk)
                if mode == "drip":
                    await asyncio.sleep(1)
        except (ConnectionResetError, ConnectionError, RuntimeError):
            pass
        return resp

    app = web.Application()
    app.router.add_post("/hook", endless)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        await etcd.put(keys.webhook_settings(), json.dumps({"allow": [f"127.0.0.1:{port}"]}))
        url = f"http://127.0.0.1:{port}/hook"
        status, body = await cluster.request(
            "POST", JOBS, json=hook_job("big", url, retries=0, timeout=3)
        )
        assert status == 201, body
        base = (await counts(cluster)).get(("webhook", "failed"), 0)
        _, run = await cluster.request("POST", f"{JOBS}/big/runs", json={})
        await run_done(cluster, run["id"])
        started = time.monotonic()

        async def failed():
            return (await counts(cluster)).get(("webhook", "failed"), 0) >= base + 1

        await wait_for(failed, 30, what="delivery failed")
        assert time.monotonic() - started < 20
        # what the receiver got into the socket before the leader hung up: socket buffers, not
        # 400 MiB (nothing is drained)
        await asyncio.sleep(0.5)
        assert sent[0] < 16 * 1024 * 1024, sent[0]
    finally:
        await runner.cleanup()
