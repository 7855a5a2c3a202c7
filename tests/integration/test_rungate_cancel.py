"""An admission's hold on a project's cap (D512) comes back when its request is cancelled at
the awkward moments, against a real etcd: while another admission's write is deciding it, and
while the last admission out writes what is left. Cancelled handlers happen at a node's shutdown
(and with a client that disconnects, where aiohttp cancels the handler). The gate's reads wait
on the test's events, so each interleaving is forced, not hoped for."""

from __future__ import annotations

import asyncio
import types

from nodes.api.rungate import RunGate
from tests.conftest import wait_for


class SteppedGate(RunGate):
    """A gate whose n-th read of the count waits for ``go[n]``."""

    def __init__(self, node) -> None:
        super().__init__(node)
        self.reads = 0
        self.at = [asyncio.Event() for _ in range(8)]
        self.go = [asyncio.Event() for _ in range(8)]

    async def _read(self, project, prefixes):
        n = self.reads
        self.reads += 1
        self.at[n].set()
        await self.go[n].wait()
        return await super()._read(project, prefixes)


class HeldEtcd:
    """The real client, whose ``get`` (the last one out's write reads with it) can be held."""

    def __init__(self, etcd) -> None:
        self.etcd = etcd
        self.getting = asyncio.Event()
        self.hold = False

    async def get(self, key):
        if self.hold:
            self.getting.set()
            await asyncio.Event().wait()  # until cancelled
        return await self.etcd.get(key)

    def __getattr__(self, name):
        return getattr(self.etcd, name)


def node(etcd, keys):
    return types.SimpleNamespace(etcd=etcd, keys=keys, node_id="n1")


async def stored(etcd, keys):
    kv = await etcd.get(keys.run_admissions("p"))
    return None if kv is None else kv.value


async def test_a_hold_cancelled_while_another_admission_writes_it_is_let_go(etcd, keys):
    gate = SteppedGate(node(etcd, keys))
    done = asyncio.Event()

    async def admit(runs: int, body: asyncio.Event | None = None) -> None:
        async with gate.admitted("p", runs):
            if body is not None:
                await body.wait()

    first = asyncio.create_task(admit(1))
    await gate.at[0].wait()  # the first decides alone, its read held
    b = asyncio.create_task(admit(1))
    a = asyncio.create_task(admit(5))
    c = asyncio.create_task(admit(1, done))  # keeps the project's admissions going
    await wait_for(lambda: len(gate._projects["p"].asks) == 3, 10, what="three waiting")
    gate.go[0].set()
    await first
    await gate.at[1].wait()  # b decides b, a and c together; its read held
    a.cancel()
    await asyncio.gather(a, return_exceptions=True)
    gate.go[1].set()
    await b
    # a's 5 runs were written with b's batch; nobody holds them now
    await wait_for(lambda: gate._projects["p"].held.runs == 1, 10, what="only c's run held")
    done.set()
    await c
    assert "p" not in gate._projects
    assert await stored(etcd, keys) is None  # the last one out wrote nothing held


async def test_a_last_write_cancelled_still_lets_the_project_go(etcd, keys):
    held = HeldEtcd(etcd)
    gate = RunGate(node(held, keys))
    held.hold = False

    async def admit(runs: int) -> None:
        async with gate.admitted("p", runs):
            held.hold = True  # the write on the way out will hang

    x = asyncio.create_task(admit(2))
    await held.getting.wait()
    x.cancel()
    await asyncio.gather(x, return_exceptions=True)
    assert "p" not in gate._projects  # the count of users came down
    held.hold = False
    async with gate.admitted("p", 1):
        assert "p" in gate._projects
    # this one was the last out, and wrote that nothing is held
    assert await stored(etcd, keys) is None
