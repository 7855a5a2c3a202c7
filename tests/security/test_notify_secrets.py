"""Issue 19 item 6: webhook secrets are write-only for everyone; below editor, webhook URLs and
header values are redacted in every answer that carries notification rules (jobs, runs' job
snapshots, project defaults). A real node and etcd, users of each role."""

from __future__ import annotations

import json

import aiohttp

from cluster.notify import SECRET_KEPT, verify
from tests.api_helpers import JOBS, RUNS, run_done
from tests.conftest import api_headers, wait_for
from tests.integration.test_access import make_user
from tests.integration.test_notifications import Receiver, allow_loopback

DEFAULTS = "/api/v1/projects/default/notifications"
SECRET = "hmac-key-nobody-may-read"
SLACK_PATH = "/services/T000/B000/slack-url-credential"
HEADER_VALUE = "Bearer header-credential"


def rules(url: str, **hook) -> list[dict]:
    return [
        {
            "on": ["failure"],
            "webhook": {
                "url": url,
                "secret": SECRET,
                "headers": {"Authorization": HEADER_VALUE},
                **hook,
            },
        }
    ]


async def call(cluster, method: str, path: str, token: str):
    async with aiohttp.ClientSession(headers=api_headers(token)) as http:
        async with http.request(method, cluster.url(None, path)) as resp:
            return resp.status, await resp.json()


def leaks(body: object) -> list[str]:
    text = json.dumps(body)
    return [s for s in (SECRET, SLACK_PATH, "header-credential") if s in text]


async def test_viewers_and_operators_see_no_webhook_credentials(cluster, etcd, keys):
    await allow_loopback(etcd, keys)
    await cluster.start()
    async with Receiver() as hook:
        url = f"http://127.0.0.1:{hook.port}{SLACK_PATH}?token=query-credential"
        job = {"name": "j", "command": "exit 1", "notifications": rules(url)}
        status, body = await cluster.request("POST", JOBS, json=job)
        assert status == 201, body
        assert body["notifications"][0]["webhook"]["secret"] == SECRET_KEPT  # not even its writer
        status, _ = await cluster.request("PUT", DEFAULTS, json={"rules": rules(url)})
        assert status == 200
        _, run = await cluster.request("POST", f"{JOBS}/j/runs", json={})
        await run_done(cluster, run["id"])

        tokens = {
            role: await make_user(cluster, f"u-{role}", {"default": role})
            for role in ("viewer", "operator", "editor")
        }
        reads = [
            f"{JOBS}",
            f"{JOBS}/j",
            f"{RUNS}",
            f"{RUNS}/{run['id']}",
            f"{RUNS}?job=j",
            DEFAULTS,
        ]
        for role, token in tokens.items():
            for path in reads:
                status, body = await call(cluster, "GET", path, token)
                assert status == 200, (role, path, body)
                found = leaks(body)
                if role == "editor":
                    assert SECRET not in found, (role, path)  # write-only for everyone
                    assert SLACK_PATH in json.dumps(body), (role, path)  # editors see URLs
                else:
                    assert found == [] and "query-credential" not in json.dumps(body), (
                        role,
                        path,
                        found,
                    )
        _, doc = await call(cluster, "GET", f"{JOBS}/j", tokens["viewer"])
        shown = doc["notifications"][0]["webhook"]
        assert shown["url"] == f"http://127.0.0.1:{hook.port}/(redacted)"
        assert shown["headers"] == {"Authorization": "(redacted)"}
        assert shown["secret"] == SECRET_KEPT  # says "there is one", never what


async def test_secret_kept_when_left_out_or_sent_back_as_shown(cluster, etcd, keys):
    """GET then PUT (as an editor or gitops export/apply does) keeps the stored secret: the
    receiver still verifies signatures with the original key. ``null`` removes it; the
    placeholder for a URL without a stored secret is refused, naming the field."""
    await allow_loopback(etcd, keys)
    await cluster.start()
    async with Receiver() as hook:
        job = {"name": "s", "command": "exit 1", "notifications": rules(hook.url)}
        status, _ = await cluster.request("POST", JOBS, json=job)
        assert status == 201
        _, shown = await cluster.request("GET", f"{JOBS}/s")
        assert shown["notifications"][0]["webhook"]["secret"] == SECRET_KEPT
        back = {k: shown[k] for k in ("name", "command", "notifications", "description")}
        status, body = await cluster.request("PUT", f"{JOBS}/s", json=back)
        assert status == 200, body
        left_out = [{"webhook": {"url": hook.url}, "on": ["failure"]}]
        status, body = await cluster.request("PATCH", f"{JOBS}/s", json={"notifications": left_out})
        assert status == 200, body
        stored = json.loads((await etcd.get(keys.job("default", "s"))).value)
        assert stored["notifications"][0]["webhook"]["secret"] == SECRET

        _, run = await cluster.request("POST", f"{JOBS}/s/runs", json={})
        await run_done(cluster, run["id"])
        delivered = await wait_for(lambda: hook.delivered(), 30, what="signed delivery")
        headers, _ = delivered[0]
        raw = hook.requests[0][1]
        assert verify(SECRET, headers["X-Cronmesh-Timestamp"], raw, headers["X-Cronmesh-Signature"])

        other = [{"webhook": {"url": "https://elsewhere.example.com/", "secret": SECRET_KEPT}}]
        status, body = await cluster.request("PATCH", f"{JOBS}/s", json={"notifications": other})
        assert status == 400 and body["error"]["field"] == "notifications.0.webhook.secret", body

        removed = [{"webhook": {"url": hook.url, "secret": None}}]
        status, body = await cluster.request("PATCH", f"{JOBS}/s", json={"notifications": removed})
        assert status == 200, body
        stored = json.loads((await etcd.get(keys.job("default", "s"))).value)
        assert stored["notifications"][0]["webhook"]["secret"] is None
        assert body["notifications"][0]["webhook"]["secret"] is None

        # project defaults: the same rules
        status, _ = await cluster.request("PUT", DEFAULTS, json={"rules": rules(hook.url)})
        assert status == 200
        _, shown = await cluster.request("GET", DEFAULTS)
        status, _ = await cluster.request("PUT", DEFAULTS, json=shown)
        assert status == 200
        stored = json.loads((await etcd.get(keys.notification_defaults("default"))).value)
        assert stored["rules"][0]["webhook"]["secret"] == SECRET
