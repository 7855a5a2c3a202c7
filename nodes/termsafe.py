"""Printing untrusted text (a job's output) to a terminal: terminal control sequences removed.

A job's log may hold escape sequences that change the window title, clear the screen, rewrite
what was printed, or write the clipboard (OSC 52). ``TerminalFilter`` removes, from a stream of
bytes fed in chunks: CSI sequences (``ESC [`` … or C1 ``CSI``), string sequences (OSC ``ESC ]``,
DCS ``ESC P``, SOS ``ESC X``, PM ``ESC ^``, APC ``ESC _`` and their C1 forms) up to BEL or ST, every
other ``ESC`` sequence, and every other C0/C1 control and DEL — everything but newline and tab.
Text is decoded as UTF-8 (invalid bytes become U+FFFD, so a stray 8-bit C1 byte cannot act
either) (#19 item 15).
"""

from __future__ import annotations

import codecs
import re

_INTRODUCERS = "\x1b\x9b\x90\x98\x9d\x9e\x9f"
_SEQUENCE = re.compile(
    r"""
    (?:\x1b\[|\x9b)[\x30-\x3f]*[\x20-\x2f]*[\x40-\x7e]                 # CSI … final byte
    | (?:\x1b[\]PX^_]|[\x90\x98\x9d\x9e\x9f])[^\x07\x1b\x9c\n]*(?:\x07|\x1b\\|\x9c)?
                                                          # OSC/DCS/SOS/PM/APC … BEL or ST
    | \x1b[\x20-\x2f]*[\x30-\x7e]?                                     # any other ESC sequence
    | [\x00-\x08\x0b-\x1f\x7f-\x9f]                                    # any other control
    """,
    re.VERBOSE,
)
_ANY_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_CSI = re.compile(r"(?:\x1b\[|\x9b)[\x30-\x3f]*[\x20-\x2f]*[\x40-\x7e]")
_STRING = re.compile(
    r"(?:\x1b[\]PX^_]|[\x90\x98\x9d\x9e\x9f])[^\x07\x1b\x9c\n]*(?:\x07|\x1b\\|\x9c)"
)
_ESC = re.compile(r"\x1b[\x20-\x2f]*[\x30-\x7e]")
# A sequence cut by the end of a chunk is held back for the next one, up to this many characters.
_HOLD = 4096


def _incomplete(tail: str) -> bool:
    """Whether ``tail`` (starting with an introducer) is a sequence the next chunk may finish."""
    if tail.startswith(("\x1b[", "\x9b")):
        return _CSI.match(tail) is None
    if tail[0] in "\x90\x98\x9d\x9e\x9f" or tail.startswith(
        ("\x1b]", "\x1bP", "\x1bX", "\x1b^", "\x1b_")
    ):
        return _STRING.match(tail) is None
    return _ESC.match(tail) is None


def strip_controls(text: str) -> str:
    """``text`` without terminal control sequences and controls (newline and tab stay)."""
    if _ANY_CONTROL.search(text) is None:
        return text
    return _SEQUENCE.sub("", text)


class TerminalFilter:
    """``feed`` bytes as they come, get safe UTF-8 bytes back; ``flush`` at the end."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._held = ""

    def feed(self, data: bytes) -> bytes:
        text = self._held + self._decoder.decode(data)
        self._held = ""
        cut = max(text.rfind(c) for c in _INTRODUCERS)
        tail = text[cut:] if cut >= 0 else ""
        if tail and "\n" not in tail and len(tail) < _HOLD and _incomplete(tail):
            text, self._held = text[:cut], text[cut:]
        return strip_controls(text).encode()

    def flush(self) -> bytes:
        text = self._held + self._decoder.decode(b"", final=True)
        self._held = ""
        return strip_controls(text).encode()
