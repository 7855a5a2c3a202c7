"""Small logs packed: many finished attempts' text in one object per project (D440).

A short run that prints a line used to cost one PUT of its own, and the S3 server's CPU for it
was most of what logs added to such a run. A small finished log (rendered text up to
``MEMBER_MAX`` bytes, no segments shipped) now joins its project's open *pack*; a pack is
sealed when it is ``window`` seconds old, holds ``MEMBERS_MAX`` logs or ``BYTES_MAX`` bytes,
and is written with one PUT at ``<project>/_packs/<node boot>-<seq>.pack``. A project's logs
never share an object with another project's (one open pack per project), and a pack name is
never reused (the boot id is random per process), so a PUT retried after an unknown outcome
writes the same bytes to the same name.

Each member is a header line ``== <job>/<run>/<attempt> <length>`` then its text, so a pack reads
on its own (``aws s3 cp … -``). The run record's ``log`` names the member exactly:
``<pack url>#<offset>+<length>`` (offset of the text, past the header); readers fetch it by range
(`PackedView`). The placement is decided when the attempt's spool closes, before its completion
is written, so the record carries it; the bytes stay in memory (bounded by ``PENDING_MAX``) and
the spool stays on disk until the pack is in the store. A node killed before that uploads the
spool as the attempt's own object at its next start; a reader that finds no pack falls back to
that object (`source`).
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field

from logstore.spool import PROJECT_RE, LogRef
from logstore.store import LogStore, ObjectMissing, log_key

PACK_DIR = "_packs"  # no job is spelled so (a name starts with a letter or digit)
MEMBER_MAX = 64 * 1024  # rendered bytes: a larger log keeps an object of its own
MEMBERS_MAX = 256
BYTES_MAX = 1024 * 1024
PENDING_MAX = 16 * 1024 * 1024  # bytes of sealed and open packs held in memory, in all
_POINTER = re.compile(
    r"(?P<url>.+)/(?P<name>[0-9a-f]{16}-[0-9]{1,12})\.pack#(?P<off>[0-9]{1,8})\+(?P<len>[0-9]{1,8})"
)


def pack_key(project: str, name: str) -> str:
    return f"{project}/{PACK_DIR}/{name}.pack"


def header(ref: LogRef, length: int) -> bytes:
    return f"== {ref.job}/{ref.run}/{ref.attempt} {length}\n".encode()


@dataclass(frozen=True)
class Member:
    """Where one attempt's log is inside a pack: ``key``, text from ``offset``, ``length`` bytes."""

    key: str
    offset: int
    length: int


def parse_pointer(log_url: str, url_of: Callable[[str], str], project: str) -> Member | None:
    """The member a record's ``log`` names, if it is a pointer into one of ``project``'s packs in
    this store; None for anything else (a plain object URL, another project's pack, another
    store, a malformed or oversized range). ``url_of`` is the store's ``url``."""
    m = _POINTER.fullmatch(log_url) if len(log_url) <= 2048 else None
    if m is None or not PROJECT_RE.fullmatch(project):
        return None
    key = pack_key(project, m["name"])
    offset, length = int(m["off"]), int(m["len"])
    if url_of(key) != f"{m['url']}/{m['name']}.pack" or length > MEMBER_MAX:
        return None
    if offset + length > BYTES_MAX + MEMBER_MAX + 4096:
        return None
    return Member(key, offset, length)


class PackedView:
    """One member of a pack, read as if it were an object of its own (``read`` and ``size``, the
    two calls the bounded readers of `logstore.tail` make); the key they pass is ignored."""

    def __init__(self, store: LogStore, member: Member) -> None:
        self.store = store
        self.member = member

    async def size(self, key: str) -> int:
        return self.member.length

    async def read(self, key: str, start: int = 0, end: int | None = None) -> bytes:
        n = self.member.length
        if start < 0 and end is None:
            start = max(0, n + start)
        stop = n if end is None else max(0, min(end, n))
        start = max(0, min(start, n))
        if start >= stop:
            return b""
        base = self.member.offset
        return await self.store.read(self.member.key, base + start, base + stop)


async def source(store: LogStore, ref: LogRef, log_url: str | None) -> tuple[LogStore, str]:
    """Where to read the stored log of ``ref`` whose record says ``log_url``: the pack member
    it points at when that pack is in the store, else the attempt's own object (a plain log, or
    a packed one whose node died before the pack was written: its spool was uploaded alone)."""
    member = parse_pointer(log_url, store.url, ref.project) if log_url else None
    if member is not None:
        try:
            await store.size(member.key)
        except ObjectMissing:
            pass
        else:
            return PackedView(store, member), log_key(ref)  # type: ignore[return-value]
    return store, log_key(ref)


@dataclass
class Pack:
    """A pack being filled (``sealed`` False) or waiting for its PUT."""

    project: str
    name: str
    opened: float
    parts: list[bytes] = field(default_factory=list)
    members: list[LogRef] = field(default_factory=list)
    size: int = 0
    sealed: bool = False

    @property
    def key(self) -> str:
        return pack_key(self.project, self.name)

    def body(self) -> bytes:
        return b"".join(self.parts)


class Packer:
    """A node's open and sealed packs (pure bookkeeping: no I/O, the clock passed in)."""

    def __init__(self, window: float, boot: str | None = None) -> None:
        self.window = window
        self.boot = boot or secrets.token_hex(8)
        self._seq = 0
        self.open: dict[str, Pack] = {}  # project -> its pack being filled
        self.sealed: list[Pack] = []
        self.held: dict[LogRef, Pack] = {}  # every attempt in a pack not yet written
        self.pending = 0  # bytes held, open and sealed

    def place(self, ref: LogRef, text: bytes, now: float) -> Member | None:
        """Put ``ref``'s rendered log in its project's open pack; None when it does not fit the
        rules (too big, memory bound reached): the attempt then keeps an object of its own."""
        if len(text) > MEMBER_MAX or self.pending + len(text) + 256 > PENDING_MAX:
            return None
        if ref in self.held:
            return None
        pack = self.open.get(ref.project)
        if pack is None:
            self._seq += 1
            pack = self.open[ref.project] = Pack(ref.project, f"{self.boot}-{self._seq}", now)
        head = header(ref, len(text))
        offset = pack.size + len(head)
        pack.parts += (head, text)
        pack.members.append(ref)
        pack.size = offset + len(text)
        self.pending += len(head) + len(text)
        self.held[ref] = pack
        if len(pack.members) >= MEMBERS_MAX or pack.size >= BYTES_MAX:
            self._seal(pack)
        return Member(pack.key, offset, len(text))

    def _seal(self, pack: Pack) -> None:
        pack.sealed = True
        self.open.pop(pack.project, None)
        self.sealed.append(pack)

    def due(self, now: float, *, everything: bool = False) -> list[Pack]:
        """Seal the open packs whose window is over (all with ``everything``); the sealed packs."""
        for pack in list(self.open.values()):
            if everything or now - pack.opened >= self.window:
                self._seal(pack)
        return list(self.sealed)

    def next_due(self, now: float) -> float | None:
        """Seconds until the oldest open pack is due (None: none open)."""
        if not self.open:
            return None
        return max(0.0, min(p.opened for p in self.open.values()) + self.window - now)

    def written(self, pack: Pack) -> list[LogRef]:
        """``pack`` is in the store: forget it; returns its members (their spools can go).
        Once only: a second call (two passes wrote it at once) returns nothing."""
        if pack not in self.sealed:
            return []
        self.sealed.remove(pack)
        self.pending -= pack.size
        for ref in pack.members:
            self.held.pop(ref, None)
        return pack.members
