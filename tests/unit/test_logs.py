"""Log frames, text rendering, the spool and the uploader (local-folder store, no network)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from logstore.frames import MAX_LINE, TextRenderer, parse_line, read_frames, render_text
from logstore.local import LocalFolderStore
from logstore.spool import LogRef, Spool
from logstore.store import StoreUnavailable, log_key, segments_prefix
from logstore.tail import follow_spool, last_lines, object_tail, spool_lines, spool_text
from logstore.uploader import Uploader

REF = LogRef("p", "j", "0001", 1)


def bodies(text: str) -> list[tuple[str, str]]:
    lines = text.split("\n")
    return [
        (d["stream"], d["text"]) for d in map(parse_line, lines[:-1] if not lines[-1] else lines)
    ]


@pytest.mark.parametrize(
    ("frames", "expected"),
    [
        ([(1.0, "stdout", b"a\nb\n")], [("stdout", "a"), ("stdout", "b")]),
        ([(1.0, "stdout", b"par"), (2.0, "stdout", b"tial\n")], [("stdout", "partial")]),
        ([(1.0, "stdout", b"no newline")], [("stdout", "no newline")]),
        (
            [(1.0, "stdout", b"o"), (1.5, "stderr", b"e\n"), (2.0, "stdout", b"k\n")],
            [("stderr", "e"), ("stdout", "ok")],
        ),
        ([(1.0, "stdout", b"\xff\x00bin\n")], [("stdout", "\\xff\x00bin")]),
        ([(1.0, "cronmesh", b"note")], [("cronmesh", "note")]),
    ],
)
def test_render_text(frames, expected):
    assert bodies("".join(render_text(frames))) == expected


def test_incremental_rendering_concatenates_to_the_whole():
    frames = [
        (float(i), "stdout" if i % 3 else "stderr", f"x{i}\ny{i}".encode()) for i in range(30)
    ]
    whole = "".join(render_text(frames))
    r, parts = TextRenderer(), []
    for f in frames:
        parts.append(r.feed(*f))
    parts.append(r.flush())
    assert "".join(parts) == whole


def test_huge_line_is_cut_and_memory_stays_bounded():
    r = TextRenderer()
    out = ""
    for _ in range(10):
        out += r.feed(1.0, "stdout", b"z" * (MAX_LINE // 2 + 7))
        assert sum(len(v[1]) for v in r._partial.values()) <= MAX_LINE
    out += r.flush()
    assert "".join(d["text"] for d in map(parse_line, out.splitlines())) == "z" * (
        10 * (MAX_LINE // 2 + 7)
    )


def test_spool_caps_a_run_with_a_visible_note(tmp_path):
    spool = Spool(tmp_path, run_cap=10)
    w = spool.open(REF)
    w.write("stdout", b"12345678")
    w.write("stdout", b"abcdef\n")
    w.write("stdout", b"more")
    w.close()
    text = "".join(spool_lines(w.path))
    assert bodies(text)[0] == ("stdout", "12345678ab")
    assert bodies(text)[-1][0] == "cronmesh" and "truncated at 10 bytes" in text
    assert spool.ready == {REF: w.path} and REF not in spool.active


def test_spool_disk_cap_drops_output_with_a_note(tmp_path):
    spool = Spool(tmp_path, disk_cap=1024 * 1024, run_cap=10 * 1024 * 1024)
    w = spool.open(REF)
    for _ in range(40):
        w.write("stdout", b"y" * 64 * 1024)
    w.close()
    assert w.path.stat().st_size < 1024 * 1024 + 1024
    assert "spool disk cap reached" in "".join(spool_lines(w.path))


def test_a_frame_cut_by_a_crash_ends_the_log(tmp_path):
    spool = Spool(tmp_path)
    w = spool.open(REF)
    w.write("stdout", b"kept\n")
    w.close()
    with open(w.path, "ab") as f:
        f.write(b"\x93\xcb")  # start of a frame, then nothing
    with open(w.path, "rb") as f:
        assert [fr[1:] for fr, _ in read_frames(f)] == [("stdout", b"kept\n"), ("end", b"")]


def test_an_attempt_that_writes_nothing_has_no_spool_file_and_nothing_to_upload(tmp_path):
    spool = Spool(tmp_path)
    quiet = spool.open(REF)
    assert quiet.empty and not quiet.path.exists()
    quiet.write("stdout", b"")  # an empty read is not output
    quiet.close()
    assert quiet.empty and quiet.closed and not quiet.path.exists()
    assert REF not in spool.ready and REF not in spool.active
    loud = spool.open(LogRef("p", "j", "0002", 1))
    loud.write("stderr", b"x")
    assert not loud.empty and loud.path.exists()
    loud.close()
    assert spool.ready == {loud.ref: loud.path}


async def test_following_a_quiet_running_attempt_sees_its_first_output(tmp_path):
    spool = Spool(tmp_path)
    w = spool.open(REF)
    got: list[str] = []

    async def follow():
        async for text in follow_spool(w.path, w):
            got.append(text)

    task = asyncio.create_task(follow())
    await asyncio.sleep(0.05)  # the follower is waiting on a spool that does not exist yet
    assert not task.done() and not w.path.exists()
    w.write("stdout", b"late\n")
    w.close()
    await asyncio.wait_for(task, 5)
    assert bodies("".join(got)) == [("stdout", "late")]


def test_last_lines():
    chunks = ["ab\n", "cd\n", "ef\n"]
    assert last_lines(iter(chunks), 2) == b"cd\nef\n"
    assert last_lines(iter(chunks), 0) == b""


async def test_spool_text_whole_and_in_ranges_across_bounded_reads(tmp_path, monkeypatch):
    spool = Spool(tmp_path)
    w = spool.open(REF)
    for i in range(300):
        w.write("stdout" if i % 3 else "stderr", f"line {i}\n".encode())
    w.write("stdout", b"no newline")
    w.close()
    whole = "".join(spool_lines(w.path)).encode()
    monkeypatch.setattr("logstore.tail.CHUNK", 1000)  # many reads, each cut between frames
    assert b"".join([c async for c in spool_text(w.path)]) == whole
    chunks = [c async for c in spool_text(w.path)]
    assert len(chunks) > 5 and max(map(len, chunks)) < 3000
    for start, length in [(0, 10), (5, 2500), (2999, None), (len(whole) - 3, 100), (len(whole), 5)]:
        got = b"".join([c async for c in spool_text(w.path, start, length)])
        assert got == whole[start : None if length is None else start + length], (start, length)
    assert [c async for c in spool_text(tmp_path / "missing.spool")] == []


async def test_a_follower_far_behind_catches_up_in_bounded_chunks(tmp_path, monkeypatch):
    monkeypatch.setattr("logstore.tail.CHUNK", 4096)
    spool = Spool(tmp_path)
    w = spool.open(REF)
    for i in range(2000):  # ~60 KiB of spool written before the follower starts
        w.write("stdout", f"{i:06d} {'x' * 16}\n".encode())
    w.close()
    got = [text async for text in follow_spool(w.path, w)]
    assert len(got) > 10 and max(map(len, got)) < 4 * 4096
    assert [b for _, b in bodies("".join(got))] == [f"{i:06d} {'x' * 16}" for i in range(2000)]
    tail = [text async for text in follow_spool(w.path, w, skip_lines=3)]
    assert [b for _, b in bodies("".join(tail))] == [
        f"{i:06d} {'x' * 16}" for i in range(1997, 2000)
    ]


async def test_object_tail_reads_only_the_end(tmp_path):
    store = LocalFolderStore(tmp_path)
    await store.put_bytes("k.log", b"".join(b"line %d\n" % i for i in range(50000)))
    assert await object_tail(store, "k.log", 3) == b"line 49997\nline 49998\nline 49999\n"
    assert await store.read("k.log", 5, 11) == b"0\nline"
    assert (await object_tail(store, "k.log", 60000)).count(b"\n") == 50000


class FlakyStore(LocalFolderStore):
    """A local store that refuses the first ``failures`` writes (a store outage)."""

    def __init__(self, root: Path, failures: int) -> None:
        super().__init__(root)
        self.failures = failures

    async def put_file(self, key, path):
        if self.failures > 0:
            self.failures -= 1
            raise StoreUnavailable("down")
        await super().put_file(key, path)

    def put_file_now(self, key, path):  # the uploader's one-hop path for a local folder
        if self.failures > 0:
            self.failures -= 1
            raise StoreUnavailable("down")
        super().put_file_now(key, path)


async def test_uploader_ships_segments_then_the_object_and_retries(tmp_path):
    t = [0.0]
    spool = Spool(tmp_path / "spool", monotonic=lambda: t[0])
    store = FlakyStore(tmp_path / "store", failures=2)
    up = Uploader(spool, store, segment_interval=1.0, retry_min=1.0, now=lambda: t[0])
    w = spool.open(REF)
    w.write("stdout", b"one\ntw")
    t[0] = 1.5
    await up.pass_once()
    assert await store.keys(segments_prefix(REF)) == [f"{segments_prefix(REF)}00000000"]
    w.write("stdout", b"o\nthree")
    t[0] = 3.0
    await up.pass_once()
    segs = await store.keys(segments_prefix(REF))
    assert len(segs) == 2
    seg_text = "".join([(await store.read(s)).decode() for s in segs])
    assert bodies(seg_text) == [("stdout", "one"), ("stdout", "two")]  # "three" still partial
    w.close()
    await up.pass_once()  # fails (1), backoff 1 s
    assert spool.backlog_bytes > 0 and w.path.exists()
    await up.pass_once()  # still backing off: no attempt
    assert store.failures == 1
    t[0] = 4.5
    await up.pass_once()  # fails (2), backoff 2 s
    t[0] = 7.0
    await up.pass_once()
    text = (await store.read(log_key(REF))).decode()
    assert bodies(text) == [("stdout", "one"), ("stdout", "two"), ("stdout", "three")]
    assert text.startswith(seg_text)
    assert await store.keys(segments_prefix(REF)) == []
    assert not w.path.exists() and spool.backlog_bytes == 0


async def test_recover_closes_spools_of_a_crashed_process(tmp_path):
    spool = Spool(tmp_path / "spool")
    w = spool.open(REF)
    w.write("stdout", b"before the crash\n")
    w._file.close()  # the process dies: no close(), no end frame
    spool2 = Spool(tmp_path / "spool")
    store = LocalFolderStore(tmp_path / "store")
    up = Uploader(spool2, store)
    assert up.recover() == 1
    await up.pass_once()
    text = (await store.read(log_key(REF))).decode()
    assert bodies(text)[0] == ("stdout", "before the crash")
    assert "node stopped before this attempt ended" in text


async def test_follow_spool_streams_until_the_writer_closes(tmp_path):
    spool = Spool(tmp_path)
    w = spool.open(REF)
    w.write("stdout", b"first\n")
    got: list[str] = []

    async def follow():
        async for text in follow_spool(w.path, w):
            got.append(text)

    task = asyncio.create_task(follow())
    for _ in range(200):
        if got:
            break
        await asyncio.sleep(0.01)
    assert bodies("".join(got)) == [("stdout", "first")]
    w.write("stdout", b"second")
    w.close()
    await asyncio.wait_for(task, 5)
    assert bodies("".join(got)) == [("stdout", "first"), ("stdout", "second")]


@pytest.mark.parametrize(
    ("url", "ok"),
    [
        ("s3://ops-logs/cronmesh", True),
        ("s3://ops-logs", True),
        ("file:///var/log/cronmesh", True),
        ("/var/log/cronmesh", True),
        ("s3://", False),
        ("s3://Bad_Bucket/x", False),
        ("http://example.com/x", False),
        ("logs", False),
    ],
)
def test_log_store_setting_is_validated(url, ok):
    from cluster.errors import InvalidInput
    from nodes.config_sources import load_config

    if ok:
        assert load_config({"log_store": url}, env={}).log_store == url
    else:
        with pytest.raises(InvalidInput) as err:
            load_config({"log_store": url}, env={})
        assert err.value.field == "log_store"


def test_parse_s3_url():
    from logstore.s3 import parse_s3_url

    assert parse_s3_url("s3://b/some/prefix/") == ("b", "some/prefix")
    assert parse_s3_url("s3://b") == ("b", "")
    with pytest.raises(ValueError):
        parse_s3_url("s3:///x")


def test_rendering_random_bytes_keeps_every_line_and_byte():
    import random

    rng = random.Random(7)
    frames, expected = [], {"stdout": b"", "stderr": b""}
    for i in range(300):
        stream = rng.choice(["stdout", "stderr"])
        data = bytes(rng.choice(b"ab\n\xff\xe2\x82\xac ") for _ in range(rng.randint(0, 200)))
        frames.append((1000.0 + i, stream, data))
        expected[stream] += data
    text = "".join(render_text(frames))
    for stream, raw in expected.items():
        got = [body for s, body in bodies(text) if s == stream]
        want = raw.split(b"\n")
        if want and want[-1] == b"":
            want.pop()
        assert got == [w.decode("utf-8", "backslashreplace") for w in want]
