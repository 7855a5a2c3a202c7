"""Snowflake run ids: 41 bits of milliseconds, 10 bits of machine id, 12 bits of sequence.

Written as 19 zero-padded decimal digits, so sorting the strings sorts by creation time.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from datetime import UTC, datetime

EPOCH_MS = 1_704_067_200_000  # 2024-01-01T00:00:00Z
MACHINE_BITS = 10
SEQUENCE_BITS = 12
MAX_MACHINE_ID = (1 << MACHINE_BITS) - 1
_SEQ_MASK = (1 << SEQUENCE_BITS) - 1
# How an id may be spelled where it arrives from outside (a URL path or query): ASCII digits only
# (``str.isdigit`` also takes "²" and "٣"), at most the 19 of a snowflake.
ID_PATTERN = re.compile(r"[0-9]{1,19}")


def is_id(value: str) -> bool:
    """Whether ``value`` is spelled like a run, execution or audit id (D160)."""
    return ID_PATTERN.fullmatch(value) is not None


class Snowflake:
    def __init__(self, machine_id: int, clock: Callable[[], float] = time.time) -> None:
        if not 0 <= machine_id <= MAX_MACHINE_ID:
            raise ValueError(f"machine id must be within 0..{MAX_MACHINE_ID}")
        self.machine_id = machine_id
        self._clock = clock
        self._last_ms = -1
        self._seq = 0

    def next(self) -> str:
        ms = int(self._clock() * 1000) - EPOCH_MS
        if ms <= self._last_ms:
            # Same millisecond, or the clock stepped back: keep counting from the last one.
            ms = self._last_ms
            self._seq = (self._seq + 1) & _SEQ_MASK
            if self._seq == 0:
                ms += 1
        else:
            self._seq = 0
        self._last_ms = ms
        value = (
            (ms << (MACHINE_BITS + SEQUENCE_BITS)) | (self.machine_id << SEQUENCE_BITS) | self._seq
        )
        return f"{value:019d}"


def id_time(run_id: str) -> datetime:
    """When a snowflake id was made."""
    ms = (int(run_id) >> (MACHINE_BITS + SEQUENCE_BITS)) + EPOCH_MS
    return datetime.fromtimestamp(ms / 1000, UTC)


def id_floor(when: datetime) -> str:
    """The smallest id made at or after ``when`` (for range scans by time)."""
    ms = max(0, int(when.timestamp() * 1000) - EPOCH_MS)
    return f"{ms << (MACHINE_BITS + SEQUENCE_BITS):019d}"
