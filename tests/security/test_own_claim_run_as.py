"""The leader's own claims (D444) never run a job as a user the node or the project refuses: a
job's ``run_as`` user that this node's policy does not allow (``run_as_users``), or that the
project does not grant, is queued for a node that may run it, not claimed in its creation here
(D142). The placement is held as the node's view had it (listing this node), so only the
run-as checks of the reservation stand between the job and a claim."""

from __future__ import annotations

import pytest

from cluster.models import JobSpec
from cluster.runas import NodeRunAs
from cluster.store import dumps
from tests.conftest import wait_for
from tests.integration.test_own_claims_races import queued_not_claimed
from tests.ownclaim_rig import P, early_in_a_second, rig, runs_of

__all__ = ["rig"]  # the fixture


@pytest.mark.parametrize("refused_by", ["node", "project", None])
async def test_a_run_as_user_refused_queues_the_run(etcd, keys, rig, refused_by):
    """A job's ``run_as`` user this node may not run (its policy), or the project does not grant
    (``run_as_users``): the run is queued for a node that may, not claimed here. (None: both
    allow it, and the run is claimed in its creation: the refusals are what queue it.)"""
    n = await rig.node("n1")
    w, view = n.worker, n.worker.view
    assert view is not None
    svc = frozenset({"svc"})
    node_users = frozenset() if refused_by == "node" else svc
    w.run_as = NodeRunAs(node="n1", is_root=True, own_user="root", users=node_users)
    # the project record as a cluster admin writes it (a job's first write keeps it)
    project_users = [] if refused_by == "project" else ["svc"]
    project = {"name": P, "run_as_users": project_users}
    written = await etcd.put(keys.project(P), dumps(project))
    await wait_for(lambda: view.project_revision(P) >= written, 10, what="the project in the view")
    assert view.project_users.get(P, frozenset()) == frozenset(project_users)
    placement = view.placement(None, "", P, None)  # a placement that lists this node
    view.placement = lambda *a, **k: placement  # type: ignore[method-assign]
    run_as = {"user": "svc"}
    spec = JobSpec(name="j", command="true", schedules=[{"cron": "* * * * * *"}], run_as=run_as)
    await n.store.put_job(P, spec)
    sched = await n.lead("n1")
    await early_in_a_second()
    await sched.fire((P, "j"))
    if refused_by is not None:
        await queued_not_claimed(etcd, keys, n, "j")
        return
    runs = await runs_of(etcd, keys, "j")
    assert runs and all(r.status == "running" and r.node == "n1" for r in runs), runs
