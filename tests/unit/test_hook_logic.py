"""Pure parts of named hooks: the payload mapping, the signature scheme, freshness, the
idempotency key, the hook document's validation, and the access rules of their routes."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from cluster.errors import InvalidInput, Unauthenticated
from cluster.hooks import (
    MAX_PARAM_VALUE,
    MAX_SKEW,
    HookSpec,
    check_fresh,
    idempotency_digest,
    map_parameters,
    parse_signature,
    sign,
    signature_matches,
    token_matches,
)
from cluster.models import parse_model
from cluster.permissions import requirement

PAYLOAD = {
    "repository": {"name": "web", "private": False, "owner": {"id": 7}},
    "commits": [{"id": "a1"}, {"id": "b2"}],
    "size": 2.5,
    "nothing": None,
    "labels": ["x", "y"],
    "dotted.key": "unreachable",
}


@pytest.mark.parametrize(
    ("path", "want"),
    [
        ("repository.name", "web"),
        ("repository.private", "false"),
        ("repository.owner.id", "7"),
        ("repository.owner", '{"id":7}'),
        ("commits.1.id", "b2"),
        ("commits.2.id", None),  # past the end
        ("commits.x", None),  # not an index
        ("size", "2.5"),
        ("nothing", None),  # null sets nothing
        ("labels", '["x","y"]'),
        ("missing.deeper", None),
        ("repository.name.more", None),  # through a string
    ],
)
def test_mapping_paths(path, want):
    got = map_parameters({"P": path}, PAYLOAD)
    assert got.get("P") == want


def test_mapping_of_a_payload_that_is_not_an_object_sets_nothing():
    assert map_parameters({"P": "a"}, []) == {}
    assert map_parameters({"P": "0"}, ["first"]) == {"P": "first"}


def test_a_too_long_value_is_refused_naming_its_path():
    with pytest.raises(InvalidInput) as err:
        map_parameters({"P": "a"}, {"a": "x" * (MAX_PARAM_VALUE + 1)})
    assert err.value.field == "payload.a"
    with pytest.raises(InvalidInput) as err:
        map_parameters({"P": "a"}, {"a": "x\0y"})
    assert err.value.field == "payload.a"


@pytest.mark.parametrize(
    ("doc", "field"),
    [
        ({"target": {"job": "j"}, "parameters": {"P": ""}}, "parameters.P"),
        ({"target": {"job": "j"}, "parameters": {"P": "a..b"}}, "parameters.P"),
        ({"target": {"job": "j"}, "parameters": {"P": "a b"}}, "parameters.P"),
        ({"target": {"job": "j"}, "parameters": {"P": ".".join("a" * 17)}}, "parameters.P"),
        ({"target": {"job": "j"}, "parameters": {"9P": "a"}}, "parameters.9P"),
        ({"target": {"job": "j"}, "parameters": {f"p{i}": "a" for i in range(65)}}, "parameters"),
        ({"target": {"job": "j", "workflow": "w"}}, "target"),
        ({"target": {"job": "J!"}}, "target.job"),
        ({"target": {"job": "j"}, "secret": "é" * 20}, "secret"),
        ({"target": {"job": "j"}, "burst": 0}, "burst"),
    ],
)
def test_bad_hook_documents_name_the_field(doc, field):
    with pytest.raises(InvalidInput) as err:
        parse_model(HookSpec, {"name": "h", **doc})
    assert err.value.field == field, err.value.message


def test_sixteen_segments_are_the_most():
    spec = parse_model(
        HookSpec, {"name": "h", "target": {"job": "j"}, "parameters": {"P": ".".join("a" * 16)}}
    )
    assert spec.parameters["P"].count(".") == 15


def test_signature_round_trip_and_forgeries():
    secret, body, now = b"k" * 20, b'{"a":1}', 1_800_000_000
    header = sign(secret, now, body)
    mac = hmac.new(secret, b"1800000000." + body, hashlib.sha256).hexdigest()
    assert header == f"t={now},v1={mac}"  # the documented scheme, reproducible by any sender
    t, sigs = parse_signature(header)
    assert t == now and signature_matches(secret, t, body, sigs)
    assert not signature_matches(secret, t, body + b" ", sigs)  # body changed
    assert not signature_matches(secret, t + 1, body, sigs)  # timestamp changed
    assert not signature_matches(b"other" * 4, t, body, sigs)  # another secret
    # a rotating sender sends two signatures: either may match
    t, sigs = parse_signature(f"t={now},v1={'0' * 64},v1={mac},v0=ignored")
    assert signature_matches(secret, t, body, sigs)


@pytest.mark.parametrize(
    "header",
    [
        "",
        "sha256=abc",
        "t=1",
        "v1=" + "a" * 64,
        "t=x,v1=" + "a" * 64,
        "t=1,v1=" + "A" * 64,
        "t=1,v1=abc",
        "t=1234567890123,v1=" + "a" * 64,
        "t=1," + "x" * 2000,
    ],
)
def test_malformed_signature_headers_are_400_naming_the_header(header):
    with pytest.raises(InvalidInput) as err:
        parse_signature(header)
    assert err.value.field == "X-Cronmesh-Signature"


@pytest.mark.parametrize(
    ("skew", "fresh"),
    [(0, True), (MAX_SKEW, True), (-MAX_SKEW, True), (MAX_SKEW + 1, False), (-MAX_SKEW - 1, False)],
)
def test_timestamps_outside_five_minutes_are_refused(skew, fresh):
    now = 1_800_000_000
    if fresh:
        check_fresh(now - skew, now)
    else:
        with pytest.raises(Unauthenticated) as err:
            check_fresh(now - skew, now)
        assert err.value.field == "X-Cronmesh-Signature.t"


def test_tokens_and_idempotency_keys():
    assert token_matches(b"abc", "abc") and not token_matches(b"abc", "abd")
    assert not token_matches(b"abc", "\udcff")  # not encodable: no match, no crash
    assert idempotency_digest("k-1") == idempotency_digest("k-1") != idempotency_digest("k-2")
    assert len(idempotency_digest("x" * 255)) == 40
    for bad in ("", "x" * 256, "é", "a\nb"):
        with pytest.raises(InvalidInput) as err:
            idempotency_digest(bad)
        assert err.value.field == "Idempotency-Key"


@pytest.mark.parametrize(
    ("method", "path", "access", "role"),
    [
        ("POST", "/api/v1/hooks/p/h", "public", "admin"),
        ("POST", "/register/h", "public", "admin"),
        ("GET", "/api/v1/hooks/p/h", "cluster", "admin"),  # only POST is open
        ("GET", "/api/v1/projects/p/hooks", "project", "viewer"),
        ("GET", "/api/v1/projects/p/hooks/h", "project", "viewer"),
        ("PUT", "/api/v1/projects/p/hooks/h", "project", "editor"),
        ("DELETE", "/api/v1/projects/p/hooks/h", "project", "editor"),
        ("POST", "/api/v1/projects/p/hooks", "project", "admin"),
    ],
)
def test_access_rules_of_hook_routes(method, path, access, role):
    need = requirement(method, path)
    assert need.access == access and (access == "public" or need.role == role)
