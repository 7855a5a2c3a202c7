"""The local-folder log store (the default of ``cronmesh dev`` and of a node without
``--log-store``): objects are plain files under a root folder. See ``LogStore`` for the methods."""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

from logstore.store import ObjectMissing, StoreUnavailable, check_key


class LocalFolderStore:
    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).resolve()
        self._root = str(self.root)

    def _path(self, key: str) -> Path:
        """The file of ``key``. Checked by its spelling (``check_key``), not by resolving it on
        disk (that cost a dozen ``lstat`` calls per key on the hot path): a key is relative,
        normalized and does not climb out of the root."""
        return Path(self._root + "/" + check_key(key))

    def url(self, key: str) -> str:
        return self._path(key).as_uri()

    async def put_file(self, key: str, path: Path) -> None:
        await asyncio.to_thread(self._move_or_copy, path, self._path(key))

    def put_file_now(self, key: str, path: Path) -> None:
        """``put_file`` without leaving the calling thread (the uploader calls it from a worker
        thread that also renders the file: one thread hop per log instead of three)."""
        self._move_or_copy(path, self._path(key))

    @classmethod
    def _move_or_copy(cls, src: Path, dst: Path) -> None:
        """Move the uploader's temporary file into place; copy it across file systems."""
        try:
            try:
                os.replace(src, dst)
            except FileNotFoundError:
                if not os.path.exists(src):
                    raise
                os.makedirs(os.path.dirname(dst), exist_ok=True)
                os.replace(src, dst)
        except FileNotFoundError:
            raise
        except OSError:  # another file system (EXDEV) or a refusal: copy instead
            cls._copy(src, dst)

    async def put_bytes(self, key: str, data: bytes) -> None:
        await asyncio.to_thread(self._write, self._path(key), data)

    @staticmethod
    def _copy(src: Path, dst: Path) -> None:
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp = dst.with_name(dst.name + ".tmp")
        try:
            shutil.copyfile(src, tmp)
            os.replace(tmp, dst)
        except OSError as exc:
            raise StoreUnavailable(str(exc)) from exc

    @staticmethod
    def _write(dst: Path, data: bytes) -> None:
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp = dst.with_name(dst.name + ".tmp")
        try:
            tmp.write_bytes(data)
            os.replace(tmp, dst)
        except OSError as exc:
            raise StoreUnavailable(str(exc)) from exc

    async def read(self, key: str, start: int = 0, end: int | None = None) -> bytes:
        return await asyncio.to_thread(self._read, self._path(key), start, end)

    @staticmethod
    def _read(path: Path, start: int, end: int | None) -> bytes:
        try:
            with open(path, "rb") as f:
                if start < 0:
                    f.seek(max(0, f.seek(0, os.SEEK_END) + start))
                else:
                    f.seek(start)
                return f.read() if end is None else f.read(max(0, end - max(start, 0)))
        except FileNotFoundError:
            raise ObjectMissing(str(path)) from None

    async def size(self, key: str) -> int:
        try:
            return self._path(key).stat().st_size
        except FileNotFoundError:
            raise ObjectMissing(key) from None

    async def keys(self, prefix: str) -> list[str]:
        def walk() -> list[str]:
            base = self._path(prefix.rstrip("/")) if prefix.strip("/") else self.root
            if not base.exists():
                return []
            found = [base] if base.is_file() else list(base.rglob("*"))
            return sorted(
                str(p.relative_to(self.root))
                for p in found
                if p.is_file() and not p.name.endswith(".tmp")
            )

        return await asyncio.to_thread(walk)

    async def delete(self, keys: list[str]) -> None:
        for key in keys:
            self._path(key).unlink(missing_ok=True)

    def close(self) -> None:
        """Nothing to release: files are opened per call."""

    async def check(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreUnavailable(str(exc)) from exc
