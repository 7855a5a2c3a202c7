"""The leader's own claims (D444) carry the claim's grant guards: a grant an admin revoked
(answered) stops a run's claim in its creation on a node reached through that grant, even before
the node's view hears of the revocation (D155)."""

from __future__ import annotations

from cluster.groups import BindingSpec, GroupSpec, GroupStore
from cluster.models import JobSpec
from tests.conftest import wait_for
from tests.ownclaim_rig import P, early_in_a_second, now, queued_ids, reserved_nothing, rig, runs_of

__all__ = ["rig"]  # the fixture


async def test_a_revoked_grant_stops_the_leaders_own_claim_its_view_has_not_heard_of(
    etcd, keys, rig
):
    groups = GroupStore(etcd, keys, now)
    await groups.put_group(GroupSpec(name="g", projects=[P]))
    await groups.put_binding("g", BindingSpec(name="b1", node="n1"))
    n = await rig.node("n1")
    view = n.worker.view
    assert view is not None
    await wait_for(
        lambda: view.placement("g", "", P, None).candidates, 10, what="the binding in the view"
    )
    spec = JobSpec(
        name="j", command="true", schedules=[{"cron": "* * * * * *"}], target={"group": "g"}
    )
    await n.store.put_job(P, spec)
    sched = await n.lead("n1")
    # the view as it was before the revocation: its watch has not delivered it
    placement, group_rev = view.placement("g", "", P, None), view.group_revision("g")
    view.placement = lambda *a, **k: placement  # type: ignore[method-assign]
    view.group_revision = lambda g: group_rev  # type: ignore[method-assign]
    await groups.set_grant("g", P, granted=False)  # the admin's 200

    await early_in_a_second()
    await sched.fire((P, "j"))
    runs = await runs_of(etcd, keys, "j")
    assert runs and all(r.status == "pending" and r.node is None for r in runs), runs
    assert await queued_ids(etcd, keys) == {r.id for r in runs}
    for r in runs:
        assert await etcd.get(keys.claim(r.id)) is None
    assert not n.worker.running and reserved_nothing(n.worker)()
