"""Notifications from a live node to a local HTTP receiver and a local SMTP server (aiosmtpd):
signed webhooks retried with backoff, Slack format, recovery, e-mail on timeout, project
defaults, failures counted without blocking runs, and no loss across a leader gap."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from email import message_from_bytes

import pytest
from aiohttp import web
from aiosmtpd.controller import Controller
from prometheus_client.parser import text_string_to_metric_families

from cluster.ids import Snowflake
from cluster.models import Job, JobSpec
from cluster.notify import verify
from cluster.store import Store
from nodes.devtools.embedded import free_port
from tests.api_helpers import JOBS, run_done
from tests.conftest import wait_for


class Receiver:
    """A local webhook endpoint: records every request; the first ``fail_first`` answer 500."""

    def __init__(self, fail_first: int = 0) -> None:
        self.fail_first = fail_first
        self.requests: list[tuple[dict[str, str], bytes, int]] = []
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/hook"
        self._runner: web.AppRunner | None = None

    async def _hook(self, request: web.Request) -> web.Response:
        body = await request.read()
        status = 500 if len(self.requests) < self.fail_first else 200
        self.requests.append((dict(request.headers), body, status))
        return web.Response(status=status, text="ok" if status == 200 else "try again")

    def delivered(self) -> list[tuple[dict[str, str], dict]]:
        return [(h, json.loads(b)) for h, b, s in self.requests if s == 200]

    async def __aenter__(self) -> Receiver:
        app = web.Application()
        app.router.add_post("/hook", self._hook)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()


class Mailbox:
    def __init__(self) -> None:
        self.messages: list = []

    async def handle_DATA(self, server, session, envelope):  # the name is aiosmtpd's API
        self.messages.append((envelope.rcpt_tos, message_from_bytes(envelope.content)))
        return "250 OK"


@pytest.fixture
def smtp_server():
    box = Mailbox()
    controller = Controller(box, hostname="127.0.0.1", port=free_port())
    controller.start()
    yield controller, box
    controller.stop()


async def allow_loopback(etcd, keys) -> None:
    """The receivers here listen on 127.0.0.1, which webhooks may reach only when a cluster admin
    allow-lists it (D170); the SSRF tests in tests/security/ show what happens otherwise."""
    await etcd.put(keys.webhook_settings(), json.dumps({"allow": ["127.0.0.1/32"]}))


def notification_counts(text: str) -> dict[tuple[str, str], float]:
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == "cronmesh_notifications_total":
                out[(s.labels["channel"], s.labels["outcome"])] = s.value
    return out


async def test_failure_webhook_is_signed_and_retried_then_recovery_in_slack_format(
    cluster, etcd, keys
):
    await allow_loopback(etcd, keys)
    await cluster.start()
    async with Receiver(fail_first=2) as hook, Receiver() as slack:
        job = {
            "name": "flaky",
            "command": "exit 3",
            "notifications": [
                {"on": ["failure"], "webhook": {"url": hook.url, "secret": "s3cret"}},
                {"on": ["recovery"], "webhook": {"url": slack.url, "format": "slack"}},
            ],
        }
        status, body = await cluster.request("POST", JOBS, json=job)
        assert status == 201, body
        _, run = await cluster.request("POST", f"{JOBS}/flaky/runs", json={})
        finished = await run_done(cluster, run["id"])
        assert finished["status"] == "failed"  # the run is not held up by the failing receiver

        await wait_for(lambda: hook.delivered(), 30, what="webhook delivered after retries")
        assert [s for _, _, s in hook.requests] == [500, 500, 200]
        deliveries = {h["X-Cronmesh-Delivery"] for h, _, _ in hook.requests}
        assert len(deliveries) == 1  # one id across retries: receivers can drop duplicates
        headers, raw, _ = hook.requests[-1]
        assert verify(
            "s3cret", headers["X-Cronmesh-Timestamp"], raw, headers["X-Cronmesh-Signature"]
        )
        payload = json.loads(raw)
        assert payload["event"] == "failure" and payload["run"]["id"] == run["id"]
        assert payload["run"]["exit_code"] == 3 and headers["X-Cronmesh-Event"] == "failure"

        status, _ = await cluster.request("PATCH", f"{JOBS}/flaky", json={"command": "true"})
        assert status == 200
        _, run2 = await cluster.request("POST", f"{JOBS}/flaky/runs", json={})
        assert (await run_done(cluster, run2["id"]))["status"] == "succeeded"
        delivered = await wait_for(lambda: slack.delivered(), 30, what="recovery message")
        headers, body = delivered[0]
        assert headers["X-Cronmesh-Event"] == "recovery"
        assert body.keys() == {"text"} and "flaky recovered" in body["text"]
        assert len(hook.delivered()) == 1  # success is not a failure: the first rule is quiet

        _, text = await cluster.request("GET", "/metrics")
        counts = notification_counts(text)
        assert counts.get(("webhook", "sent"), 0) >= 2


async def test_timeout_email_through_smtp_and_project_defaults(cluster, smtp_server, etcd, keys):
    await allow_loopback(etcd, keys)
    controller, box = smtp_server
    await cluster.start(smtp_url=f"smtp://127.0.0.1:{controller.port}?from=cronmesh@example.com")
    defaults = {"rules": [{"on": ["timeout", "failure"], "email": {"to": ["ops@example.com"]}}]}
    status, body = await cluster.request(
        "PUT", "/api/v1/projects/default/notifications", json=defaults
    )
    assert status == 200, body
    _, before = await cluster.request("GET", "/api/v1/projects/default/notifications")
    status, body = await cluster.request(
        "PUT", "/api/v1/projects/default/notifications", json={"rules": [{"on": ["x"]}]}
    )
    assert status == 400 and body["error"]["field"].startswith("rules.0")
    status, after = await cluster.request("GET", "/api/v1/projects/default/notifications")
    assert status == 200 and after == before  # the rejected document changed nothing
    assert [r["on"] for r in after["rules"]] == [["timeout", "failure"]], after
    job = {"name": "slow", "command": "sleep 30", "timeout": 0.5, "kill_grace": 0.5}
    await cluster.request("POST", JOBS, json=job)
    _, run = await cluster.request("POST", f"{JOBS}/slow/runs", json={})
    assert (await run_done(cluster, run["id"]))["status"] == "timed_out"
    await wait_for(lambda: box.messages, 30, what="e-mail received")
    rcpt, msg = box.messages[0]
    assert rcpt == ["ops@example.com"]
    assert msg["Subject"] == "[cronmesh] default/slow: timeout"
    assert msg["From"] == "cronmesh@example.com"
    assert run["id"] in msg.get_payload()

    # a job with its own (empty) list opts out of the defaults
    quiet = {"name": "quiet", "command": "exit 1", "notifications": []}
    await cluster.request("POST", JOBS, json=quiet)
    _, run = await cluster.request("POST", f"{JOBS}/quiet/runs", json={})
    await run_done(cluster, run["id"])
    _, run = await cluster.request("POST", f"{JOBS}/slow/runs", json={})
    await run_done(cluster, run["id"])
    await wait_for(lambda: len(box.messages) >= 2, 30, what="second e-mail")
    await asyncio.sleep(1.0)  # a message for "quiet" would have come before the second "slow"
    assert all("quiet" not in m["Subject"] for _, m in box.messages)


async def test_unreachable_webhook_is_counted_and_does_not_block_runs(cluster, etcd, keys):
    await allow_loopback(etcd, keys)
    await cluster.start()
    dead = f"http://127.0.0.1:{free_port()}/nobody"
    job = {
        "name": "j",
        "command": "exit 1",
        "notifications": [{"webhook": {"url": dead, "retries": 1, "timeout": 1}}],
    }
    await cluster.request("POST", JOBS, json=job)
    _, before = await cluster.request("GET", "/metrics")
    base = notification_counts(before).get(("webhook", "failed"), 0)
    runs = [(await cluster.request("POST", f"{JOBS}/j/runs", json={}))[1] for _ in range(3)]
    for run in runs:
        assert (await run_done(cluster, run["id"]))["status"] == "failed"

    async def counted():
        _, text = await cluster.request("GET", "/metrics")
        return notification_counts(text).get(("webhook", "failed"), 0) >= base + 3

    await wait_for(counted, 30, what="failures counted")


async def test_outcomes_finished_while_no_leader_runs_are_notified_by_the_next_leader(
    cluster, etcd, keys
):
    """The cursor in etcd makes the next leader pick up what happened in between."""
    await allow_loopback(etcd, keys)
    async with Receiver() as hook:
        node = await cluster.start("a")
        await wait_for(lambda: node.leading, 15, what="leader")
        await wait_for(lambda: etcd.get(keys.notifier_cursor()), 15, what="cursor written")
        await cluster.stop(node)

        # While no node runs, a run finishes (as a worker's completion would write it).
        store = Store(etcd, keys, Snowflake(1000), lambda: datetime.now(UTC))
        spec = JobSpec(
            name="gap",
            command="false",
            notifications=[{"on": ["failure"], "webhook": {"url": hook.url}}],
        )
        job, _ = await store.put_job("default", spec)
        assert isinstance(job, Job)
        run = store.new_run(job, source="manual")
        await etcd.txn([], store.create_run_ops(run))
        run.status, run.node = "running", "a"
        _, ops = store.finish_ops(run, status="failed", exit_code=1)
        await etcd.txn([], ops)

        await cluster.start("b")
        delivered = await wait_for(lambda: hook.delivered(), 30, what="notified after the gap")
        assert delivered[0][1]["run"]["id"] == run.id
        assert delivered[0][1]["event"] == "failure"


async def test_a_delivery_cut_short_by_a_leader_change_is_finished_by_the_next_leader(
    cluster, etcd, keys
):
    """Leader a is still retrying a webhook when it stops: b resends it, same delivery id."""
    await allow_loopback(etcd, keys)
    async with Receiver(fail_first=10**6) as hook:
        a = await cluster.start("a")
        await wait_for(lambda: a.leading, 15, what="a leads")
        b = await cluster.start("b")
        job = {
            "name": "handover",
            "command": "exit 1",
            "target": {"selector": "role=worker"},
            "notifications": [{"webhook": {"url": hook.url, "retries": 20}}],
        }
        status, body = await cluster.request("POST", JOBS, json=job, node=b)
        assert status == 201, body
        worker = await cluster.start("w", properties={"role": "worker"})
        _, run = await cluster.request("POST", f"{JOBS}/handover/runs", json={}, node=b)
        await run_done(cluster, run["id"])
        await wait_for(lambda: hook.requests, 30, what="a's first attempt")
        first_id = hook.requests[0][0]["X-Cronmesh-Delivery"]

        await cluster.stop(a)  # a resigns with the delivery unfinished
        await wait_for(lambda: b.leading or worker.leading, 15, what="a new leader")
        hook.fail_first = 0  # the receiver is healthy again
        delivered = await wait_for(lambda: hook.delivered(), 30, what="delivered by new leader")
        headers, payload = delivered[0]
        assert headers["X-Cronmesh-Delivery"] == first_id
        assert payload["run"]["id"] == run["id"] and payload["event"] == "failure"


async def test_signing_key_from_the_nodes_environment(cluster, monkeypatch, etcd, keys):
    """`secret_env` keeps the key out of etcd: the node reads it from its environment."""
    await allow_loopback(etcd, keys)
    monkeypatch.setenv("HOOKTEST_KEY", "from-env")
    await cluster.start()
    async with Receiver() as hook:
        rules = [
            {"webhook": {"url": hook.url, "secret_env": "HOOKTEST_KEY"}},
            {"webhook": {"url": hook.url, "secret_env": "HOOKTEST_UNSET", "retries": 0}},
        ]
        job = {"name": "envkey", "command": "exit 1", "notifications": rules}
        status, body = await cluster.request("POST", JOBS, json=job)
        assert status == 201 and "from-env" not in json.dumps(body)
        _, text = await cluster.request("GET", "/metrics")
        base = notification_counts(text).get(("webhook", "failed"), 0)
        _, run = await cluster.request("POST", f"{JOBS}/envkey/runs", json={})
        await run_done(cluster, run["id"])
        delivered = await wait_for(lambda: hook.delivered(), 30, what="signed delivery")
        headers, _ = delivered[0]
        raw = next(b for h, b, s in hook.requests if s == 200)
        assert verify(
            "from-env", headers["X-Cronmesh-Timestamp"], raw, headers["X-Cronmesh-Signature"]
        )

        async def unset_key_counted():
            _, text = await cluster.request("GET", "/metrics")
            return notification_counts(text).get(("webhook", "failed"), 0) >= base + 1

        await wait_for(unset_key_counted, 30, what="missing key counted as a failure")
        assert len(hook.requests) == 1  # nothing was sent without its key


@pytest.mark.slow
async def test_sigkilled_leader_mid_delivery_loses_no_notification(procs, etcd, keys):
    """Real node processes: the leader is SIGKILLed while it retries a webhook; the next leader
    (after the lease expires) delivers it, with the same delivery id."""
    await allow_loopback(etcd, keys)
    import signal

    from tests.chaos.harness import leader_of, wait_ready
    from tests.conftest import api_session

    async with Receiver(fail_first=10**6) as hook, api_session() as http:
        first = procs.start("k1", lease_ttl=3)
        await wait_ready(http, first)
        await wait_for(lambda: leader_of(http, [first]), 15, what="k1 leads")
        second = procs.start("k2", "--property", "role=worker", lease_ttl=3)
        await wait_ready(http, second)
        job = {
            "name": "killed",
            "command": "exit 4",
            "target": {"selector": "role=worker"},
            "notifications": [{"webhook": {"url": hook.url, "retries": 20}}],
        }
        async with http.post(f"{second.url}{JOBS}", json=job) as r:
            assert r.status == 201, await r.text()
        async with http.post(f"{second.url}{JOBS}/killed/runs", json={}) as r:
            run = await r.json()
        await wait_for(lambda: hook.requests, 30, what="k1's first attempt")
        first_id = hook.requests[0][0]["X-Cronmesh-Delivery"]

        first.signal(signal.SIGKILL)
        await asyncio.to_thread(first.proc.wait, 10)  # dead before the receiver heals
        hook.fail_first = 0
        await wait_for(lambda: leader_of(http, [second]), 20, what="k2 leads")
        delivered = await wait_for(lambda: hook.delivered(), 30, what="delivered by k2")
        assert delivered[0][0]["X-Cronmesh-Delivery"] == first_id
        assert delivered[0][1]["run"]["id"] == run["id"]
        assert delivered[0][1]["run"]["exit_code"] == 4
