"""The uploader's pass over running attempts (D387): only attempts with a segment due get work,
attempts that end without output leave no state behind, and opening a spool wakes nothing."""

from __future__ import annotations

from pathlib import Path

from logstore.local import LocalFolderStore
from logstore.spool import LogRef, Spool
from logstore.store import segments_prefix
from logstore.uploader import Uploader


def ref(i: int) -> LogRef:
    return LogRef("p", "j", f"{i:04d}", 1)


def uploader(tmp_path: Path, t: list[float]) -> tuple[Spool, LocalFolderStore, Uploader]:
    spool = Spool(tmp_path / "spool", monotonic=lambda: t[0])
    store = LocalFolderStore(tmp_path / "store")
    return spool, store, Uploader(spool, store, segment_interval=1.0, now=lambda: t[0])


async def test_a_pass_works_only_on_attempts_with_new_output(tmp_path):
    t = [10.0]
    spool, store, up = uploader(tmp_path, t)
    quiet = [spool.open(ref(i)) for i in range(300)]
    loud = spool.open(ref(999))
    loud.write("stdout", b"hello\n")
    # a first segment once its first output is segment_interval old (D441): a short attempt
    # never ships one
    assert up._due(t[0]) == []
    t[0] = 10.99
    assert up._due(t[0]) == []
    t[0] = 11.0
    assert up._due(t[0]) == [(ref(999), loud)]
    await up.pass_once()
    assert await store.keys(segments_prefix(ref(999))) == [f"{segments_prefix(ref(999))}00000000"]
    # shipped less than segment_interval ago: not due, even with new output
    loud.write("stdout", b"again\n")
    t[0] = 11.5
    assert up._due(t[0]) == []
    t[0] = 12.1
    assert up._due(t[0]) == [(ref(999), loud)]
    await up.pass_once()
    assert len(await store.keys(segments_prefix(ref(999)))) == 2
    # nothing new since the last segment: not due however long it waits
    t[0] = 20.0
    assert up._due(t[0]) == []
    # a quiet attempt that starts writing is shipped an interval after its first output
    quiet[7].write("stderr", b"late\n")
    assert up._due(t[0]) == []
    t[0] += 1.0
    assert up._due(t[0]) == [(ref(7), quiet[7])]
    for w in [*quiet, loud]:
        w.close()


async def test_attempts_ending_without_output_leave_no_state(tmp_path):
    t = [0.0]
    spool, _store, up = uploader(tmp_path, t)
    for round_ in range(20):
        writers = [spool.open(ref(round_ * 100 + i)) for i in range(100)]
        writers[0].write("stdout", b"x\n")  # one per round ships a segment, then ends empty-handed
        t[0] += 2.0
        await up.pass_once()
        for w in writers:
            w.close()
    t[0] += 2.0
    await up.pass_once()  # uploads the 20 finished spools with output
    assert not spool.active and not spool.ready
    assert len(up._shipping) == 0  # was one entry per attempt ever seen, never dropped


async def test_an_attempt_that_ends_before_its_first_segment_ships_none(tmp_path):
    t = [0.0]
    spool, store, up = uploader(tmp_path, t)
    short = spool.open(ref(1))
    short.write("stdout", b"quick\n")
    t[0] = 0.9
    await up.pass_once()
    short.close()
    t[0] = 5.0
    assert up._due(t[0]) == []
    await up.pass_once()  # its whole log, no segment ever
    assert await store.keys(segments_prefix(ref(1))) == [] and not spool.ready


async def test_a_segment_waiting_its_turn_is_dropped_once_its_attempt_ends(tmp_path):
    t = [0.0]
    spool, store, up = uploader(tmp_path, t)
    w = spool.open(ref(1))
    w.write("stdout", b"x\n")
    t[0] = 2.0
    assert up._due(t[0]) == [(ref(1), w)]
    w.close()  # ended between the pass's choice and the segment's turn
    await up._segment(ref(1), w)
    assert await store.keys(segments_prefix(ref(1))) == [] and ref(1) not in up._shipping


async def test_opening_a_spool_does_not_wake_the_uploader_but_a_ready_one_does(tmp_path):
    spool = Spool(tmp_path / "spool")
    w = spool.open(ref(1))
    assert not spool.changed.is_set()
    quiet = spool.open(ref(2))
    quiet.close()  # ended without output: nothing to upload
    assert not spool.changed.is_set()
    w.write("stdout", b"out\n")
    w.close()
    assert spool.changed.is_set() and ref(1) in spool.ready
