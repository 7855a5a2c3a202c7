"""A bounded pool for password hashing, apart from the default thread pool.

scrypt costs ~0.1 s of CPU and 32 MiB per call. Run in the default executor (``asyncio.to_thread``)
a login flood queued every log read, archive upload and file move behind it. Here hashing has its
own few threads and a bounded queue: when ``workers + queue`` calls are in flight, the next one is
refused at once with 429 (``busy``) instead of waiting, so memory and latency stay bounded.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from cluster.errors import TooManyRequests

T = TypeVar("T")


class HashingBusy(TooManyRequests):
    code = "busy"


class HashPool:
    def __init__(self, workers: int = 2, queue: int = 8) -> None:
        self.workers = workers
        self.limit = workers + queue
        self.in_flight = 0
        self.refused = 0
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="cronmesh-hash")

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        if self.in_flight >= self.limit:
            self.refused += 1
            raise HashingBusy("too many password checks in progress; retry shortly", retry_after=1)
        self.in_flight += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)
        finally:
            self.in_flight -= 1

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
