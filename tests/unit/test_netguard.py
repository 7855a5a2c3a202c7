"""Pure decisions of the webhook guard (D170), the run caps (D173) and secret keeping/redaction
(D172), with plain values."""

from __future__ import annotations

import ipaddress
import math

import pytest

from cluster.errors import InvalidInput, QuotaExceeded, TooManyRequests
from cluster.limits import Buckets, RunLimits, check_pending, effective
from cluster.netguard import (
    Guard,
    Refused,
    WebhookSettings,
    check_header,
    is_public,
    parse_entry,
    target,
)
from cluster.notify import SECRET_KEPT, NotificationRule, keep_secrets, redact_document


@pytest.mark.parametrize(
    ("ip", "public"),
    [
        ("93.184.216.34", True),
        ("2606:4700::1111", True),
        ("127.0.0.1", False),
        ("127.8.9.10", False),
        ("10.0.0.1", False),
        ("172.16.5.4", False),
        ("192.168.1.1", False),
        ("169.254.169.254", False),  # cloud metadata
        ("100.64.0.1", False),  # shared address space
        ("0.0.0.0", False),
        ("224.0.0.1", False),
        ("255.255.255.255", False),
        ("198.18.0.1", False),  # benchmarking
        ("::1", False),
        ("::", False),
        ("fe80::1", False),
        ("fc00::1", False),
        ("::ffff:127.0.0.1", False),  # IPv4-mapped loopback
        ("::ffff:93.184.216.34", True),
        ("2002:7f00:1::", False),  # 6to4 of 127.0.0.1
        ("64:ff9b::a00:1", False),  # NAT64 of 10.0.0.1
        ("ff02::1", False),
    ],
)
def test_public_addresses(ip, public):
    assert is_public(ipaddress.ip_address(ip)) is public


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/",
        "http:///nohost",
        "http://user:pw@example.com/",
        "http://user@example.com/",
        "http://2130706433/",
        "http://0x7f000001/",
        "http://127.1/",
        "http://017700000001/",
        "http://example.com:0/",
        "http://example.com:99999/",
        "http://exa mple.com/",
        "http://*.example.com/",
    ],
)
def test_urls_that_cannot_be_checked_are_refused(url):
    with pytest.raises(Refused):
        target(url)


@pytest.mark.parametrize(
    ("url", "ok"),
    [
        ("https://hooks.slack.com/services/x", True),
        ("http://93.184.216.34:8080/", True),
        ("http://localhost:2379/", False),
        ("http://LOCALHOST./", False),
        ("http://foo.localhost/", False),
        ("http://127.0.0.1:2379/v3/maintenance/defragment", False),
        ("http://[::1]:2379/", False),
        ("http://[::ffff:127.0.0.1]/", False),
        ("http://169.254.169.254/latest/meta-data/", False),
        ("http://etcd-0.etcd:2379/", False),  # an etcd endpoint by name
        ("http://203.0.113.9:2379/", False),  # a node's public address
    ],
)
def test_names_and_literals_are_judged_before_resolving(url, ok):
    guard = Guard(
        internal=frozenset({ipaddress.ip_address("203.0.113.9")}),
        internal_hosts=frozenset({"etcd-0.etcd"}),
    )
    if ok:
        guard.check_name(target(url))
    else:
        with pytest.raises(Refused):
            guard.check_name(target(url))


def test_allow_list_entries_open_what_they_name_only():
    guard = Guard(
        allow=[
            parse_entry("127.0.0.1:8080"),
            parse_entry("10.0.0.0/8"),
            parse_entry("*.corp.example"),
            parse_entry("[::1]:9000"),
        ]
    )
    guard.check_name(target("http://127.0.0.1:8080/"))
    with pytest.raises(Refused):
        guard.check_name(target("http://127.0.0.1:2379/"))  # another port of the same address
    guard.check_name(target("http://10.9.8.7:2379/"))
    guard.check_name(target("http://[::1]:9000/"))
    with pytest.raises(Refused):
        guard.check_name(target("http://[::1]:9001/"))
    # an allow-listed name: its (inside) addresses are trusted
    t = target("https://hooks.corp.example/x")
    guard.check_addresses(t, [ipaddress.ip_address("192.168.3.4")])
    # other names resolving inside are refused as a whole, even with one public address
    t = target("https://mixed.example.com/")
    with pytest.raises(Refused):
        guard.check_addresses(
            t, [ipaddress.ip_address("93.184.216.34"), ipaddress.ip_address("192.168.3.4")]
        )
    with pytest.raises(Refused):
        guard.check_addresses(t, [])


@pytest.mark.parametrize(
    "entry", ["", "not a host!", "10.0.0.0/33", "127.0.0.1:0", "h:99999", "2130706433", "[::1"]
)
def test_bad_allow_list_entries(entry):
    with pytest.raises(ValueError):
        WebhookSettings(allow=[entry])


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("Host", "x"),
        ("content-length", "1"),
        ("Transfer-Encoding", "chunked"),
        ("Connection", "close"),
        ("X-Cronmesh-Signature", "sha256=0"),
        ("Bad Name", "x"),
        ("X-Ok", "a\r\nHost: evil"),
        ("X-Ok", "x" * 5000),
    ],
)
def test_refused_headers(name, value):
    with pytest.raises(Refused):
        check_header(name, value)


def test_ordinary_headers_pass():
    check_header("Authorization", "Bearer abc")
    check_header("X-Api-Key", "k")


def rule(url: str, **hook) -> NotificationRule:
    return NotificationRule.model_validate({"webhook": {"url": url, **hook}})


def test_secrets_kept_by_url_removed_by_null_refused_when_nothing_to_keep():
    old = [rule("https://a.example/", secret="A"), rule("https://b.example/", secret="B")]
    # reordered, one left out, one sent back as shown: both keep their own URL's secret
    new = [rule("https://b.example/", secret=SECRET_KEPT), rule("https://a.example/")]
    kept = keep_secrets(new, old, "notifications")
    assert kept is not None
    assert [r.webhook.secret for r in kept if r.webhook] == ["B", "A"]
    # a new URL without a secret gets none; null removes; a new secret replaces
    new = [rule("https://c.example/"), rule("https://a.example/", secret=None)]
    kept = keep_secrets(new, old, "notifications")
    assert kept is not None
    assert [r.webhook.secret for r in kept if r.webhook] == [None, None]
    kept = keep_secrets([rule("https://a.example/", secret="new")], old, "x")
    assert kept is not None and kept[0].webhook is not None and kept[0].webhook.secret == "new"
    with pytest.raises(InvalidInput) as err:
        keep_secrets([rule("https://c.example/", secret=SECRET_KEPT)], old, "rules")
    assert err.value.field == "rules.0.webhook.secret"
    # secret_env instead of a secret: nothing is carried over
    kept = keep_secrets([rule("https://a.example/", secret_env="KEY")], old, "x")
    assert kept is not None and kept[0].webhook is not None and kept[0].webhook.secret is None


def test_redaction_of_answers():
    doc = {
        "jobs": [
            {
                "notifications": [
                    {
                        "webhook": {
                            "url": "https://hooks.slack.com:8443/services/T/B/secretpath?k=v",
                            "secret": "s",
                            "headers": {"Authorization": "Bearer t"},
                        }
                    },
                    {"email": {"to": ["a@b.example"]}},
                ]
            }
        ],
        "parameters": {"webhook": "a plain string stays"},
    }
    full = redact_document(json_copy(doc), full=True)
    hook = full["jobs"][0]["notifications"][0]["webhook"]
    assert hook["secret"] == SECRET_KEPT and hook["url"].endswith("?k=v")
    low = redact_document(json_copy(doc), full=False)
    hook = low["jobs"][0]["notifications"][0]["webhook"]
    assert hook == {
        "url": "https://hooks.slack.com:8443/(redacted)",
        "secret": SECRET_KEPT,
        "headers": {"Authorization": "(redacted)"},
    }
    assert low["parameters"] == {"webhook": "a plain string stays"}
    none = redact_document({"webhook": {"url": "http://x/", "secret": None}}, full=True)
    assert none["webhook"]["secret"] is None


def json_copy(doc):
    import json

    return json.loads(json.dumps(doc))


def test_limits_layer_project_over_cluster_over_default():
    eff = effective(RunLimits(run_burst=10), RunLimits(max_pending_runs=3))
    assert (eff.max_pending_runs, eff.run_burst, eff.runs_per_second) == (3, 10, 5.0)
    assert effective(None, None).max_pending_runs == 2000


def test_pending_cap():
    check_pending("a", 1, 2, 3)
    with pytest.raises(QuotaExceeded) as err:
        check_pending("a", 2, 2, 3)
    assert err.value.field == "max_pending_runs" and err.value.status == 403


def test_token_bucket_refills_with_time_and_refuses_what_never_fits():
    b = Buckets()
    assert b.take("a", 3, rate=1.0, burst=3, now=0.0) is None
    assert b.take("a", 1, rate=1.0, burst=3, now=0.0) == pytest.approx(1.0)
    assert b.take("b", 1, rate=1.0, burst=3, now=0.0) is None  # per project
    assert b.take("a", 1, rate=1.0, burst=3, now=1.0) is None
    assert b.take("a", 2, rate=1.0, burst=3, now=1.5) == pytest.approx(1.5)
    assert b.take("a", 3, rate=1.0, burst=3, now=100.0) is None  # never more than the burst
    assert b.take("a", 4, rate=1.0, burst=3, now=200.0) == math.inf
    limits = RunLimits(runs_per_second=1.0, run_burst=2)
    b.admit("c", 2, limits, now=0.0)
    with pytest.raises(TooManyRequests) as err:
        b.admit("c", 1, limits, now=0.0)
    assert err.value.retry_after == pytest.approx(1.0)
    with pytest.raises(QuotaExceeded):
        b.admit("c", 3, limits, now=10.0)


def test_secret_env_may_not_name_the_nodes_own_variables():
    from cluster.netguard import check_secret_env

    check_secret_env("BACKUP_HOOK_KEY")
    for name in ("CRONMESH_PEER_SECRET", "CRONMESH_ADMIN_TOKEN", "cronmesh_etcd_password"):
        with pytest.raises(Refused):
            check_secret_env(name)
