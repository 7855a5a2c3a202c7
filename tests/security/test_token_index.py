"""A user's tokens are indexed under their name (D514). Creating a token (an API token or a
login's session) counted the user's tokens by reading every token of every user: a request of
any signed-in user cost the node the whole ``tokens/`` prefix (up to 120 per user). Now a
creation, a listing and a revocation read the user's own index; tokens from before the index get
their entries once per cluster."""

from __future__ import annotations

from datetime import UTC, datetime

from cluster.identity import MAX_TOKENS_PER_USER, IdentityStore, TokenRecord
from cluster.tokens import digest, new_token, token_id
from tests.integration.test_access import call, make_user

OTHERS, EACH = 6, 50  # other users' tokens in the cluster


async def test_creating_a_token_reads_only_its_users_tokens(cluster, etcd, keys):
    node = await cluster.start()
    identity = IdentityStore(etcd, keys, lambda: datetime.now(UTC))
    for u in range(OTHERS):
        await make_user(cluster, f"o{u}", {"a": "viewer"})
        for _ in range(EACH - 1):
            await identity.create_token(f"o{u}")
    viewer = await make_user(cluster, "v", {"a": "viewer"})
    read, prefixes = 0, set()
    range_ = node.etcd.range  # range_all pages through it

    async def counted(key, *args, **kw):
        nonlocal read
        res = await range_(key, *args, **kw)
        read += len(res.kvs)
        prefixes.add(key)
        return res

    node.etcd.range = counted
    try:
        for _ in range(3):
            status, text = await call(cluster, "POST", "/api/v1/users/v/tokens", viewer, json={})
            assert status == 201, text
        status, text = await call(cluster, "GET", "/api/v1/users/v/tokens", viewer)
        assert status == 200 and text.count('"id"') == 4, text
    finally:
        node.etcd.range = range_
    assert keys.tokens() not in prefixes, prefixes
    assert read < EACH, read  # v's own entries (and v's record): 300 others' tokens, each time


async def test_tokens_from_before_the_index_are_indexed_once_and_counted(cluster, etcd, keys):
    await cluster.start()
    await make_user(cluster, "v", {"a": "viewer"})  # holds one token, indexed
    identity = IdentityStore(etcd, keys, lambda: datetime.now(UTC))
    now = datetime.now(UTC)
    for _ in range(MAX_TOKENS_PER_USER - 1):  # as an older version wrote them: no index entry
        secret = new_token()
        record = TokenRecord(id=token_id(secret), digest=digest(secret), user="v", created_at=now)
        await etcd.put(keys.token(record.id), record.model_dump_json())
    await etcd.delete(keys.user_tokens_indexed())
    assert len(await identity.list_tokens("v")) == 1
    assert await identity.index_tokens() == MAX_TOKENS_PER_USER - 1 + 1 + 1  # v's, the admin's
    assert await identity.index_tokens() == 0  # once
    assert len(await identity.list_tokens("v")) == MAX_TOKENS_PER_USER
    status, body = await cluster.request("POST", "/api/v1/users/v/tokens", json={})
    assert status == 409 and "tokens; revoke some" in str(body), body


async def test_a_token_without_an_entry_does_not_outlive_its_users_revocation(cluster, etcd, keys):
    """A token an older node wrote during a rolling upgrade, after the index was built, has no
    entry: disabling its user, resetting the password or deleting the user must still end it
    (D519); from the index alone it survived, and a re-created user of the name inherited it."""
    await cluster.start()
    await make_user(cluster, "v", {"a": "viewer"})
    identity = IdentityStore(etcd, keys, lambda: datetime.now(UTC))
    secret = new_token()
    record = TokenRecord(
        id=token_id(secret), digest=digest(secret), user="v", created_at=datetime.now(UTC)
    )
    await etcd.put(keys.token(record.id), record.model_dump_json())  # as an older node does
    assert await identity.resolve(secret) is not None
    status, body = await cluster.request("PATCH", "/api/v1/users/v", json={"enabled": False})
    assert status == 200, body
    assert await etcd.get(keys.token(record.id)) is None
    status, body = await cluster.request("PATCH", "/api/v1/users/v", json={"enabled": True})
    assert status == 200, body
    assert await identity.resolve(secret) is None  # re-enabling revives nothing (D167)
