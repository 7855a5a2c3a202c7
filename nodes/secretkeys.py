"""The node's secrets key file, read again when it changes (a Kubernetes Secret mounted as a file
is updated in place; a rotation needs no restart). See docs/security.md, "Secrets"."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import structlog

from cluster.errors import InvalidInput
from cluster.secretbox import KeyRing

log = structlog.get_logger(__name__)


def read_key_file(path: str) -> KeyRing:
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise InvalidInput(
            f"cannot read the secrets key file {path}: {exc}", field="secrets_key_file"
        ) from exc
    return KeyRing.parse(text)


class KeyFile:
    """``ring()``: the key ring of ``path`` (None without a path). A file that changes is read
    again; a change that cannot be read keeps the last good ring (and says so in the log)."""

    def __init__(self, path: str | None) -> None:
        self.path = path
        self._ring: KeyRing | None = None
        self._seen: tuple[int, int, int] | None = None
        if path is not None:
            self._ring = read_key_file(path)
            self._seen = self._stamp()
            mode = os.stat(path).st_mode
            if mode & (stat.S_IRWXG | stat.S_IRWXO) and not os.path.islink(path):
                log.warning("the secrets key file is readable by others; chmod 600", path=path)

    def _stamp(self) -> tuple[int, int, int] | None:
        assert self.path is not None
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def ring(self) -> KeyRing | None:
        if self.path is None:
            return None
        stamp = self._stamp()
        if stamp is not None and stamp != self._seen:
            self._seen = stamp
            try:
                self._ring = read_key_file(self.path)
                log.info(
                    "secrets key file read again", keys=self._ring.ids, current=self._ring.current
                )
            except InvalidInput as exc:
                log.error(
                    "secrets key file unusable; keeping the keys read before", error=exc.message
                )
        return self._ring
