"""Pure parts of identity and access: rule table, password hashes, tokens, signing, rate limits."""

from __future__ import annotations

import pytest

from cluster import passwords, tokens
from cluster.permissions import Requirement, allows, match_path, requirement, visible_projects
from nodes.api import signing
from nodes.api.ratelimit import LoginLimiter

P = "/api/v1/projects/web"


@pytest.mark.parametrize(
    ("method", "path", "want"),
    [
        ("GET", "/healthz", Requirement("public")),
        ("GET", "/metrics", Requirement("metrics")),
        ("GET", "/status", Requirement("metrics")),
        ("GET", "/readyz", Requirement("public")),
        ("POST", "/healthz", Requirement("cluster")),
        ("POST", "/api/v1/auth/login", Requirement("public")),
        ("GET", "/internal/v1/projects/x/runs/1/logs", Requirement("peer")),
        ("GET", "/api/v1/nodes", Requirement("authenticated")),
        ("POST", "/api/v1/nodes/n1/drain", Requirement("cluster")),
        ("GET", "/api/v1/groups/g", Requirement("authenticated")),
        ("PUT", "/api/v1/groups/g", Requirement("cluster")),
        ("GET", "/api/v1/users", Requirement("cluster")),
        ("GET", "/api/v1/users/bob", Requirement("self", user="bob")),
        ("POST", "/api/v1/users/bob/tokens", Requirement("self", user="bob")),
        ("DELETE", "/api/v1/users/bob", Requirement("cluster")),
        ("GET", "/api/v1/audit", Requirement("cluster")),
        ("GET", P, Requirement("project", "viewer", project="web")),
        ("DELETE", P, Requirement("cluster")),
        ("GET", f"{P}/workflows/w/executions/1", Requirement("project", "viewer", project="web")),
        ("POST", f"{P}/jobs", Requirement("project", "editor", project="web")),
        ("PATCH", f"{P}/jobs/j", Requirement("project", "editor", project="web")),
        ("POST", f"{P}/jobs/j/runs", Requirement("project", "operator", project="web")),
        ("POST", f"{P}/jobs/j/backfill", Requirement("project", "operator", project="web")),
        ("POST", f"{P}/runs/1/rerun", Requirement("project", "operator", project="web")),
        ("POST", f"{P}/runs/1/report", Requirement("project", "operator", project="web")),
        ("POST", f"{P}/workflows/w/executions", Requirement("project", "operator", project="web")),
        ("POST", f"{P}/executions/9/abort", Requirement("project", "operator", project="web")),
        ("PUT", f"{P}/workflows/w", Requirement("project", "editor", project="web")),
        ("POST", f"{P}/secrets/s", Requirement("project", "admin", project="web")),
        ("GET", "/api/v1/projects/*/jobs", Requirement("cluster")),
        ("GET", "/api/v1/brand-new", Requirement("cluster")),
        ("GET", "/", Requirement("public")),  # redirects to the web UI
        ("POST", "/", Requirement("cluster")),
        ("GET", "//", Requirement("public")),
        ("GET", "/ui/js/app.js", Requirement("public")),
        ("GET", "/api/v1/cron/preview", Requirement("authenticated")),
    ],
)
def test_rule_table(method, path, want):
    assert requirement(method, path) == want


def test_match_path_binds_segments_and_rest():
    assert match_path("/a/{x}/c", "/a/b/c") == {"x": "b"}
    assert match_path("/", "/") == {}
    assert match_path("/", "/a") is None
    assert match_path("/a", "/") is None
    assert match_path("/a/{x}/c", "/a/b/c/d") is None
    assert match_path("/a/{x}/**", "/a/b") == {"x": "b"}
    assert match_path("/a/{x}", "/a//") is None


def test_roles_are_a_chain_and_grants_scope_them():
    need = Requirement("project", "operator", project="web")
    assert allows(need, "u", {"web": "editor"})
    assert allows(need, "u", {"*": "operator"})
    assert not allows(need, "u", {"web": "viewer"})
    assert not allows(need, "u", {"api": "admin"})
    assert allows(Requirement("cluster"), "u", {"*": "admin"})
    assert not allows(Requirement("cluster"), "u", {"web": "admin", "*": "editor"})
    assert allows(Requirement("self", user="u"), "u", {})
    assert not allows(Requirement("self", user="v"), "u", {"*": "editor"})
    assert not allows(Requirement("peer"), "u", {"*": "admin"})
    assert visible_projects({"web": "viewer"}, ["api", "web"]) == ["web"]
    assert visible_projects({"*": "viewer"}, ["api", "web"]) == ["api", "web"]


def test_password_hash_records_parameters_and_salt():
    small = passwords.ScryptParams(n=2**10)
    a = passwords.hash_password("correct horse", small)
    b = passwords.hash_password("correct horse", small)
    assert a != b  # random salt
    scheme, n, r, p, salt, digest = a.split("$")
    assert (scheme, n, r, p) == ("scrypt", "1024", "8", "1")
    assert len(passwords._unb64(salt)) == 16 and len(passwords._unb64(digest)) == 32
    assert passwords.verify_password("correct horse", a)
    assert not passwords.verify_password("correct horsE", a)
    assert not passwords.verify_password("x", "md5$abc")
    assert passwords.needs_rehash(a)  # below the default cost
    default = passwords.hash_password("correct horse")
    assert default.startswith("scrypt$32768$8$1$") and not passwords.needs_rehash(default)


def test_tokens_are_random_and_stored_as_digests():
    t1, t2 = tokens.new_token(), tokens.new_token()
    assert t1 != t2 and t1.startswith("cm_") and len(t1) > 40
    assert tokens.matches(t1, tokens.digest(t1)) and not tokens.matches(t2, tokens.digest(t1))
    assert tokens.token_id(t1) == tokens.digest(t1)[:16]


def test_signature_covers_everything_and_replays_fail():
    secret, now = b"s" * 32, 1_000_000.0
    headers = signing.sign(secret, "POST", "/internal/v1/x?a=1", b"body", now, "n1", to="n2")

    def check(method="POST", path="/internal/v1/x?a=1", body=b"body", h=headers, at=now, c=None):
        c = c or signing.NonceCache()
        return signing.verify(secret, method, path, body, h, at, c, me="n2")

    assert check() is None
    assert check(method="PUT") == "bad signature"
    assert check(path="/internal/v1/x?a=2") == "bad signature"
    assert check(body=b"bodY") == "bad signature"
    assert check(h={**headers, signing.H_NODE: "n2"}) == "bad signature"
    assert check(at=now + signing.WINDOW + 1) == "timestamp outside the replay window"
    assert check(h={}) == "unsigned request"
    cache = signing.NonceCache()
    assert check(c=cache) is None
    assert check(c=cache, at=now + 1) == "replayed request"


def test_login_limiter_per_user_and_per_address():
    lim = LoginLimiter(per_user=3, per_address=5, window=60)
    for i in range(3):
        assert lim.retry_after("Bob", "1.1.1.1", float(i)) is None
        lim.failed("Bob", "1.1.1.1", float(i))
    assert lim.retry_after("bob", "2.2.2.2", 3.0) == pytest.approx(57.0)  # names fold case
    assert lim.retry_after("eve", "1.1.1.1", 3.0) is None
    lim.failed("eve", "1.1.1.1", 4.0)
    lim.failed("eve", "1.1.1.1", 5.0)
    assert lim.retry_after("mallory", "1.1.1.1", 6.0) is not None  # the address is spent
    assert lim.retry_after("bob", "2.2.2.2", 61.0) is None  # the window slid past
    attempt = lim.reserve("carl", "3.3.3.3", 0.0)
    lim.succeeded(attempt)
    assert "carl" not in lim.users.hits and "3.3.3.3" not in lim.addresses.hits


def test_etcd_security_from_config(tmp_path):
    from cluster.errors import InvalidInput
    from nodes.config import NodeConfig
    from nodes.config_sources import etcd_security, load_config

    pw = tmp_path / "pw"
    pw.write_text("s3cret\n")
    cfg = load_config(
        {},
        env={
            "CRONMESH_ETCD_USER": "cm",
            "CRONMESH_ETCD_PASSWORD_FILE": str(pw),
            "CRONMESH_ETCD_CA": "/ca.crt",
            "CRONMESH_SECURITY_LEVEL": "0",
        },
    )
    sec = etcd_security(cfg)
    assert (sec.user, sec.password, sec.ca) == ("cm", "s3cret", "/ca.crt")
    assert sec.tls(["http://x:2379"]) and cfg.security_level == 0
    assert not etcd_security(NodeConfig()).tls(["http://x:2379"])
    assert etcd_security(NodeConfig()).tls(["https://x:2379"])
    with pytest.raises(InvalidInput, match="etcd_password"):
        etcd_security(NodeConfig(etcd_user="cm"))
    with pytest.raises(InvalidInput, match="go together"):
        etcd_security(NodeConfig(etcd_cert="/c.crt"))
    with pytest.raises(InvalidInput):
        load_config({}, env={"CRONMESH_SECURITY_LEVEL": "2"})
    assert "s3cret" not in repr(NodeConfig(etcd_password="s3cret", admin_password="12345678"))
