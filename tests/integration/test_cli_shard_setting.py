"""`cronmesh settings scheduler-shards --set K` (found walking the docs: its answer lists every
shard's leader as null, which looked broken): a change says that the leaders stepped down and
where they show up again; a set that changes nothing says nothing more."""

from __future__ import annotations

import pytest

from tests.conftest import wait_for
from tests.integration.test_cli_workflow_slots import cli


@pytest.mark.timeout(90)
async def test_setting_shards_says_the_leaders_come_back(cluster):
    await cluster.start()
    url = cluster.url()
    code, out, err = await cli(url, "settings", "scheduler-shards", "--set", "2")
    assert code == 0, err
    assert "shards: 2" in out and "changed: true" in out, out
    assert "every shard leader stepped down" in err and "cronmesh settings scheduler-shards" in err

    async def led():
        _, body = await cluster.request("GET", "/api/v1/settings/scheduler-shards")
        leaders = body["leaders"]
        return body if len(leaders) == 2 and all(leaders.values()) else None

    await wait_for(led, 40, what="both shards led again")
    code, out, err = await cli(url, "settings", "scheduler-shards", "--set", "2")
    assert code == 0 and "changed: false" in out, (out, err)
    assert "stepped down" not in err, err
