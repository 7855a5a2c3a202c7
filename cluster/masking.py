"""Masking of secret values in a stream of output chunks (pure, no I/O).

A ``Masker`` replaces every occurrence of any of its values by ``***`` in one stream (stdout or
stderr of one run), also when an occurrence is split across chunks. It never emits a byte that
could still turn out to belong to a value: it holds back the longest tail of what it has seen
that is a proper prefix of some value — at most ``max(len(value)) - 1`` bytes — and emits it
when the next chunk shows it is not one, or at ``flush()``. Everything else is emitted at once,
so a live follower sees ordinary output without delay.

Overlapping occurrences (of one value, or of two values) are masked as their union, so no byte of
any occurrence is ever emitted; a masked stretch that continues into the next chunk is written as
one ``***``, so the output does not depend on how the stream was cut. Only exact bytes are
matched (not encodings of a value: base64, URL-quoting, ...).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any

MASK = b"***"


class Masker:
    def __init__(self, values: Iterable[bytes], mask: bytes = MASK) -> None:
        self.values = sorted({v for v in values if v}, key=len, reverse=True)
        self.mask = mask
        self.keep = max((len(v) for v in self.values), default=1) - 1
        self._held = b""
        self._marks: list[tuple[int, int]] = []  # masked stretches inside ``_held``
        self._open = False  # the output so far ends with a mask (a stretch at 0 joins it)

    @property
    def held(self) -> int:
        """Bytes held back right now (never more than ``keep``)."""
        return len(self._held)

    def feed(self, data: bytes) -> bytes:
        """The masked output that can be emitted after ``data``."""
        if not self.values:
            return data
        buf = self._held + data
        spans = self._spans(buf)
        cut = len(buf) - self._tail(buf)
        return self._emit(buf, spans, cut)

    def flush(self) -> bytes:
        """Everything still held (end of the stream)."""
        buf = self._held
        if not buf:
            return b""
        return self._emit(buf, self._spans(buf), len(buf))

    def _spans(self, buf: bytes) -> list[tuple[int, int]]:
        """Merged, sorted [start, end) stretches of ``buf`` covered by an occurrence."""
        found = list(self._marks)
        for v in self.values:
            i = buf.find(v)
            while i >= 0:
                found.append((i, i + len(v)))
                i = buf.find(v, i + 1)
        found.sort()
        merged: list[tuple[int, int]] = []
        for s, e in found:
            if merged and s <= merged[-1][1]:
                if e > merged[-1][1]:
                    merged[-1] = (merged[-1][0], e)
            else:
                merged.append((s, e))
        return merged

    def _tail(self, buf: bytes) -> int:
        """Length of the longest suffix of ``buf`` that is a proper prefix of a value."""
        best = 0
        start = max(0, len(buf) - self.keep)
        for v in self.values:
            first = v[:1]
            i = buf.find(first, start)
            while i >= 0 and len(buf) - i > best:
                if v.startswith(buf[i:]) and len(buf) - i < len(v):
                    best = len(buf) - i
                    break
                i = buf.find(first, i + 1)
        return best

    def _emit(self, buf: bytes, spans: list[tuple[int, int]], cut: int) -> bytes:
        out: list[bytes] = []
        pos = 0
        was_open = self._open
        self._open = False
        marks: list[tuple[int, int]] = []
        for s, e in spans:
            if s >= cut:
                marks.append((s - cut, e - cut))
                continue
            out.append(buf[pos:s])
            if not (s == 0 and was_open):
                out.append(self.mask)
            pos = min(e, cut)
            if e > cut:
                marks.append((0, e - cut))  # the same stretch continues in what is held
            if e >= cut:  # the output ends with this mask: a stretch right after joins it
                self._open = True
        if pos < cut:
            out.append(buf[pos:cut])
        if cut == 0:  # nothing emitted: the output still ends as it did
            self._open = was_open
        self._held = buf[cut:]
        self._marks = marks
        return b"".join(out)


class MaskedOutput:
    """An ``on_output(stream, chunk)`` callback that masks each stream before passing it on."""

    def __init__(self, sink: Callable[[str, bytes], None], values: Iterable[bytes]) -> None:
        self.sink = sink
        self.values = list(values)
        self.streams: dict[str, Masker] = {}

    def write(self, stream: str, data: bytes) -> None:
        masker = self.streams.get(stream)
        if masker is None:
            masker = self.streams[stream] = Masker(self.values)
        out = masker.feed(data)
        if out:
            self.sink(stream, out)

    def flush(self) -> None:
        for stream, masker in self.streams.items():
            out = masker.flush()
            if out:
                self.sink(stream, out)


def mask_result(value: Any, secrets: list[bytes]) -> Any:
    """A run's JSON result with every secret value in its strings replaced by ``***`` (the
    result is stored in the run record and shown by the API, like output)."""
    if isinstance(value, str):
        raw = value.encode("utf-8", "surrogateescape")
        for secret in sorted(secrets, key=len, reverse=True):
            raw = raw.replace(secret, MASK)
        return raw.decode("utf-8", "replace")
    if isinstance(value, list):
        return [mask_result(v, secrets) for v in value]
    if isinstance(value, dict):
        return {mask_result(k, secrets): mask_result(v, secrets) for k, v in value.items()}
    if isinstance(value, int | float) and not isinstance(value, bool):
        # a number as the API will write it (a PIN, an account number): masked as a string
        text = json.dumps(value).encode()
        if any(secret in text for secret in secrets if secret):
            return mask_result(text.decode(), secrets)
    return value
