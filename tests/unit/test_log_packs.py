"""Small logs packed per project (D440): the packer's bookkeeping with plain values, the record's
pointer, ranged reads of a member, and the uploader's pack path against a real folder store."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from logstore import packs
from logstore.local import LocalFolderStore
from logstore.packs import Member, PackedView, Packer, parse_pointer, source
from logstore.spool import LogRef, Spool
from logstore.store import StoreUnavailable, log_key
from logstore.uploader import Uploader, render_small


def ref(project: str = "p", job: str = "j", run: str = "1", attempt: int = 1) -> LogRef:
    return LogRef(project, job, run, attempt)


def test_members_are_found_by_offset_and_length_and_headed_by_their_name():
    p = Packer(window=1.0, boot="0123456789abcdef")
    texts = {ref(run=str(i)): f"line {i}\n".encode() * i for i in range(1, 6)}
    placed = {r: p.place(r, t, now=0.0) for r, t in texts.items()}
    (pack,) = p.due(now=1.0)
    body = pack.body()
    assert pack.key == "p/_packs/0123456789abcdef-1.pack"
    for r, m in placed.items():
        assert m is not None and m.key == pack.key
        assert body[m.offset : m.offset + m.length] == texts[r]
        head = body[: m.offset].rsplit(b"\n", 2)[-2] + b"\n"
        assert head == f"== j/{r.run}/1 {m.length}\n".encode()
    assert p.pending == len(body)
    assert p.written(pack) == list(texts)
    assert p.pending == 0 and not p.held and not p.sealed


def test_projects_never_share_a_pack():
    p = Packer(window=1.0)
    a = p.place(ref("a", run="1"), b"a\n", 0.0)
    b = p.place(ref("b", run="2"), b"b\n", 0.0)
    a2 = p.place(ref("a", run="3"), b"a\n", 0.0)
    assert a and b and a2
    assert a.key == a2.key != b.key
    assert a.key.startswith("a/_packs/") and b.key.startswith("b/_packs/")
    sealed = p.due(now=5.0)
    assert {pk.project: [r.project for r in pk.members] for pk in sealed} == {
        "a": ["a", "a"],
        "b": ["b"],
    }


def test_a_pack_is_sealed_by_age_count_or_size_and_names_are_never_reused():
    p = Packer(window=2.0)
    p.place(ref(run="1"), b"x\n", now=10.0)
    assert p.due(now=11.9) == [] and p.next_due(11.0) == pytest.approx(1.0)
    assert len(p.due(now=12.0)) == 1 and p.next_due(12.0) is None
    for i in range(packs.MEMBERS_MAX):
        p.place(ref(run=str(100 + i)), b"y\n", now=20.0)
    assert len(p.sealed) == 2  # full at MEMBERS_MAX, sealed at once
    big = b"z" * (packs.MEMBER_MAX - 1) + b"\n"
    for i in range(packs.BYTES_MAX // packs.MEMBER_MAX + 1):
        p.place(ref(run=str(1000 + i)), big, now=20.0)
    assert len(p.sealed) == 3 and all(pk.size <= packs.BYTES_MAX + 8192 for pk in p.sealed)
    names = [pk.name for pk in p.sealed] + [pk.name for pk in p.open.values()]
    assert len(set(names)) == len(names)
    assert Packer(1.0).boot != Packer(1.0).boot  # a new process, new names


def test_too_big_twice_placed_or_over_the_memory_bound_keeps_an_own_object(monkeypatch):
    p = Packer(window=1.0)
    assert p.place(ref(run="1"), b"x" * (packs.MEMBER_MAX + 1), 0.0) is None
    assert p.place(ref(run="2"), b"ok\n", 0.0) is not None
    assert p.place(ref(run="2"), b"ok\n", 0.0) is None  # already in a pack
    monkeypatch.setattr(packs, "PENDING_MAX", p.pending + 300)
    assert p.place(ref(run="3"), b"y" * 200, 0.0) is None
    assert p.pending < packs.PENDING_MAX


URL = "s3://bkt/pre/"


def url_of(key: str) -> str:
    return URL + key


@pytest.mark.parametrize(
    ("pointer", "project", "want"),
    [
        (
            f"{URL}p/_packs/0123456789abcdef-7.pack#10+20",
            "p",
            Member("p/_packs/0123456789abcdef-7.pack", 10, 20),
        ),
        (f"{URL}p/j/1/1.log", "p", None),  # an own object: no member
        (f"{URL}q/_packs/0123456789abcdef-7.pack#10+20", "p", None),  # another project's pack
        ("s3://other/pre/p/_packs/0123456789abcdef-7.pack#10+20", "p", None),  # another store
        (f"{URL}p/../q/_packs/0123456789abcdef-7.pack#10+20", "p", None),
        (f"{URL}p/_packs/0123456789abcdef-7.pack#10+{packs.MEMBER_MAX + 1}", "p", None),
        (f"{URL}p/_packs/0123456789abcdef-7.pack#99999999+20", "p", None),
        (f"{URL}p/_packs/0123456789abcdef-7.pack#-1+20", "p", None),
        (f"{URL}p/_packs/../0123456789abcdef-7.pack#1+2", "p", None),
        (f"{URL}p/_packs/x-7.pack#1+2", "p", None),
        (f"{URL}P/_packs/0123456789abcdef-7.pack#1+2", "P", None),  # not a project name
    ],
)
def test_a_record_pointer_names_only_its_own_projects_pack_in_this_store(pointer, project, want):
    assert parse_pointer(pointer, url_of, project) == want


async def test_a_member_reads_like_an_object_of_its_own(tmp_path: Path):
    store = LocalFolderStore(tmp_path / "store")
    body = b"== j/1/1 4\nabc\n== j/2/1 6\nhello\n"
    await store.put_bytes("p/_packs/0123456789abcdef-1.pack", body)
    view = PackedView(store, Member("p/_packs/0123456789abcdef-1.pack", 26, 6))
    assert await view.size("ignored") == 6
    assert await view.read("k") == b"hello\n"
    assert await view.read("k", 1, 3) == b"el"
    assert await view.read("k", -3) == b"lo\n"
    assert await view.read("k", 4, 100) == b"o\n"  # never past the member
    assert await view.read("k", 7) == b""
    # the record's pointer leads there; a pack that is not in the store leads to the own object
    where = store.url("p/_packs/0123456789abcdef-1.pack") + "#26+6"
    got, key = await source(store, ref(run="2"), where)
    assert await got.read(key) == b"hello\n"
    gone = store.url("p/_packs/0123456789abcdef-9.pack") + "#26+6"
    got, key = await source(store, ref(run="2"), gone)
    assert got is store and key == log_key(ref(run="2"))


class FlakyStore(LocalFolderStore):
    """A real folder store whose PUTs fail while ``down`` (an S3 outage, as the uploader sees it)."""

    down = False
    puts: list[str]

    async def put_bytes(self, key: str, data: bytes) -> None:
        self.puts = [*getattr(self, "puts", []), key]
        if self.down:
            raise StoreUnavailable("down")
        await super().put_bytes(key, data)

    def put_file_now(self, key: str, path: Path) -> None:
        self.puts = [*getattr(self, "puts", []), key]
        if self.down:
            raise StoreUnavailable("down")
        super().put_file_now(key, path)


async def test_uploader_packs_small_logs_keeps_their_spools_until_written_and_retries(
    tmp_path: Path,
):
    clock = [100.0]
    store = FlakyStore(tmp_path / "store")
    store.down = True
    spool = Spool(tmp_path / "spool")
    up = Uploader(spool, store, now=lambda: clock[0], packer=Packer(window=1.0), retry_min=0.5)
    pointers, texts = {}, {}
    for i in range(3):
        w = spool.open(ref(run=str(i + 1)))
        w.write("stdout", f"hello {i}\n".encode())
        w.close()
        texts[w.ref] = render_small(w.path, 1 << 20)
        pointers[w.ref] = up.pack(w)
        assert pointers[w.ref] is not None and w.ref not in spool.ready
    big = spool.open(ref(job="big"))
    big.write("stdout", b"x" * (packs.MEMBER_MAX + 10) + b"\n")
    big.close()
    assert up.pack(big) is None and big.ref in spool.ready  # its own object
    big_text = render_small(big.path, 1 << 30)
    assert up.backlog == 4
    clock[0] += 1.0
    await up.pass_once()  # the store is down: nothing lost, everything kept on disk
    assert up.backlog == 4 and len(list(spool.root.rglob("*.spool"))) == 4
    store.down = False
    tried = len(store.puts)
    clock[0] += 0.2
    await up.pass_once()  # every retry waits for its backoff (0.5 s)
    assert len(store.puts) == tried and up.backlog == 4
    clock[0] += 1.0
    await up.pass_once()
    assert up.backlog == 0 and not list(spool.root.rglob("*.spool"))
    assert [k for k in store.puts[tried:] if "_packs" in k] == [
        "p/_packs/" + up.packer.boot + "-1.pack"
    ]
    for r, where in pointers.items():
        got, key = await source(store, r, where)
        assert await got.read(key) == texts[r]
    assert await store.read(log_key(big.ref)) == big_text


async def test_drain_writes_the_open_pack_before_the_node_stops(tmp_path: Path):
    store = LocalFolderStore(tmp_path / "store")
    spool = Spool(tmp_path / "spool")
    up = Uploader(spool, store, packer=Packer(window=3600.0))
    w = spool.open(ref())
    w.write("stdout", b"bye\n")
    w.close()
    where = up.pack(w)
    assert where is not None and up.backlog == 1
    await up.drain(5.0)
    assert up.backlog == 0
    got, key = await source(store, w.ref, where)
    assert (await got.read(key)).endswith(b" stdout bye\n")


async def test_a_pass_and_the_stops_drain_at_once_write_a_pack_once(tmp_path: Path):
    store = FlakyStore(tmp_path / "store")
    spool = Spool(tmp_path / "spool")
    up = Uploader(spool, store, packer=Packer(window=0.0))
    w = spool.open(ref())
    w.write("stdout", b"once\n")
    w.close()
    assert up.pack(w) is not None
    await asyncio.gather(up.pass_once(), up.drain(5.0))
    assert [k for k in store.puts if "_packs" in k] == [f"p/_packs/{up.packer.boot}-1.pack"]
    assert up.backlog == 0 and not up.packer.sealed and not up.packer.held
    assert (
        up.packer.written(packs.Pack("p", "x", 0.0)) == []
    )  # a pack it does not hold: nothing, no error
