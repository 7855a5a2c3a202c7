"""The only package that talks to etcd.

Built on the gRPC stubs that ``aetcd`` ships (``aetcd.rpc``), not on its high-level client: we need
range requests with ``limit``/``revision``/create-revision bounds, one watch stream per watcher that
reports the revision it has seen, and precise control of timeouts. Everything else in cronmesh uses
the small vocabulary re-exported here (``KV``, ``Compare``, ``Op``, ``Etcd``) and never imports
``aetcd``.

Errors: a call that fails because etcd is unreachable or too slow raises :class:`Unavailable`. A
transaction that may or may not have been applied raises :class:`OutcomeUnknown` (a subclass): the
caller must read the state back and decide, never retry blindly.

Members: the client keeps one gRPC channel per endpoint and sends every call to the *current*
one. A call that times out or finds its member unreachable makes the client move on to the next
member (the one that failed longest ago), so a member that is frozen with its connections open
(SIGSTOP, a hung disk) costs one short deadline, not the node's lease. Watches on the member left
behind end with :class:`Unavailable`; their owners resume from their last revision elsewhere.

The package's modules, by section: ``types`` (the values answered), ``builders`` (``Compare``,
``Op``), ``observer`` (change observation for the audit log), ``security`` (TLS and user),
``members`` (channels, failover, auth: the base of the client), ``client`` (``Etcd``) and
``blocking`` (``BlockingLease``). The errors are in :mod:`cluster.errors`. Import every name from
``cluster.etcd``: the modules are its layout, not its interface.
"""

from __future__ import annotations

from cluster.errors import (
    AuthExpired,
    Compacted,
    CronmeshError,
    LeaseGone,
    OutcomeUnknown,
    Rejected,
    Unavailable,
)
from cluster.etcd.blocking import BlockingLease
from cluster.etcd.builders import Compare, Op
from cluster.etcd.client import Etcd, Skip, never_sent, watch_family
from cluster.etcd.members import DEFAULT_TIMEOUT, MAX_MESSAGE, PAGE_KEYS, next_member
from cluster.etcd.observer import OBSERVER, ChangeObserver
from cluster.etcd.security import Security
from cluster.etcd.types import KV, Event, Range, TxnResult, WatchBatch, prefix_end

__all__ = [
    "DEFAULT_TIMEOUT",
    "KV",
    "MAX_MESSAGE",
    "OBSERVER",
    "PAGE_KEYS",
    "AuthExpired",
    "BlockingLease",
    "ChangeObserver",
    "Compacted",
    "Compare",
    "CronmeshError",
    "Etcd",
    "Event",
    "LeaseGone",
    "Op",
    "OutcomeUnknown",
    "Range",
    "Rejected",
    "Security",
    "Skip",
    "TxnResult",
    "Unavailable",
    "WatchBatch",
    "never_sent",
    "next_member",
    "prefix_end",
    "watch_family",
]
