"""The cron preview with a start instant and a DST policy, and the DST warnings of a saved job
or workflow, against a real node (D223)."""

from __future__ import annotations

PATH = "/api/v1/cron/preview"


async def test_preview_from_an_instant_with_policy_and_flags(cluster):
    await cluster.start()
    params = {
        "expr": "30 1 * * *",
        "timezone": "America/New_York",
        "from": "2026-10-31T12:00:00Z",
        "count": "3",
    }
    status, body = await cluster.request("GET", PATH, params=params)
    assert status == 200, body
    assert body["from"] == "2026-10-31T12:00:00+00:00"
    assert body["dst"] == {"gap": "shift", "fold": "auto"}
    assert body["fires"] == [
        {"time": "2026-11-01T01:30:00-04:00", "dst": "fold_first"},
        {"time": "2026-11-02T01:30:00-05:00", "dst": None},
        {"time": "2026-11-03T01:30:00-05:00", "dst": None},
    ]
    assert body["times"] == [f["time"] for f in body["fires"]]
    status, body = await cluster.request("GET", PATH, params={**params, "dst_fold": "both"})
    assert status == 200, body
    assert [(f["time"], f["dst"]) for f in body["fires"]] == [
        ("2026-11-01T01:30:00-04:00", "fold_first"),
        ("2026-11-01T01:30:00-05:00", "fold_second"),
        ("2026-11-02T01:30:00-05:00", None),
    ]
    spring = {**params, "expr": "30 2 * * *", "from": "2026-03-07T12:00:00-05:00", "count": "1"}
    status, body = await cluster.request("GET", PATH, params=spring)
    assert body["fires"] == [{"time": "2026-03-08T03:00:00-04:00", "dst": "gap_shifted"}], body
    status, body = await cluster.request("GET", PATH, params={**spring, "dst_gap": "skip"})
    assert body["fires"] == [{"time": "2026-03-09T02:30:00-04:00", "dst": "gap_skipped"}], body


async def test_preview_names_the_bad_parameter(cluster):
    await cluster.start()
    base = {"expr": "@daily"}
    for extra, field in (
        ({"from": "yesterday"}, "from"),
        ({"from": "2026-11-01T01:30:00"}, "from"),  # a wall time, not an instant
        ({"from": "0001-01-01T00:00:00Z"}, "from"),
        ({"from": "2026-11-01T01:30:00Z" + "0" * 500}, "from"),
        ({"dst_gap": "jump"}, "dst_gap"),
        ({"dst_fold": "second"}, "dst_fold"),
        ({"count": "51"}, "count"),
    ):
        status, body = await cluster.request("GET", PATH, params={**base, **extra})
        assert status == 400, (extra, body)
        assert body["error"]["field"] == field, (extra, body)
        assert field in body["error"]["message"], (extra, body)


async def test_saving_a_schedule_in_a_transition_warns(cluster):
    await cluster.start()
    job = {
        "command": "true",
        "schedules": [
            {"cron": "0 12 * * *", "timezone": "America/New_York"},
            {"cron": "30 2 * * *", "timezone": "America/New_York", "dst": {"gap": "skip"}},
        ],
    }
    status, body = await cluster.request("PUT", "/api/v1/projects/default/jobs/dst", json=job)
    assert status == 201, body
    assert [(w["field"], w["code"]) for w in body["warnings"]] == [("schedules.1", "dst_gap")]
    assert "does not run that day (dst.gap: skip)" in body["warnings"][0]["message"]
    assert body["schedules"][1]["dst"] == {"gap": "skip", "fold": "auto"}
    # a schedule nowhere near a transition: no warnings key
    quiet = {"command": "true", "schedules": [{"cron": "0 12 * * *", "timezone": "Europe/Paris"}]}
    status, body = await cluster.request("PUT", "/api/v1/projects/default/jobs/dst", json=quiet)
    assert status == 200 and "warnings" not in body, body
    # bad policies: 400 naming the field, nothing written
    for schedule, field in (
        ({"cron": "30 2 * * *", "dst": {"gap": "jump"}}, "schedules.0.dst.gap"),
        ({"cron": "30 2 * * *", "dst": {"fold": "twice"}}, "schedules.0.dst.fold"),
        ({"cron": "30 2 * * *", "dst": {"when": "x"}}, "schedules.0.dst.when"),
        ({"cron": "@every 1h", "dst": {"gap": "skip"}}, "schedules.0.dst"),
        ({"at": "2026-12-24T18:00:00", "dst": {"gap": "skip"}}, "schedules.0.dst"),
    ):
        status, body = await cluster.request(
            "PUT",
            "/api/v1/projects/default/jobs/dst",
            json={"command": "false", "schedules": [schedule]},
        )
        assert status == 400, (schedule, body)
        assert body["error"]["field"] == field, (schedule, body)
    status, body = await cluster.request("GET", "/api/v1/projects/default/jobs/dst")
    assert body["command"] == "true"
    # a workflow's schedules warn the same way
    wf = {
        "schedules": [
            {"cron": "30 1 * * *", "timezone": "America/Chicago", "dst": {"fold": "both"}}
        ],
        "tasks": [{"name": "a", "command": "true"}],
    }
    status, body = await cluster.request("PUT", "/api/v1/projects/default/workflows/wf", json=wf)
    assert status == 201, body
    assert [(w["field"], w["code"]) for w in body["warnings"]] == [("schedules.0", "dst_fold")]
    assert "runs twice (dst.fold: both)" in body["warnings"][0]["message"]


async def test_the_cli_prints_the_warnings(cluster, tmp_path):
    import asyncio

    from tests.conftest import run_cli

    await cluster.start()
    doc = tmp_path / "jobs" / "early.yaml"
    doc.parent.mkdir()
    doc.write_text(
        "name: early\ncommand: 'true'\n"
        "schedules:\n  - {cron: '30 2 * * *', timezone: America/New_York, dst: {gap: skip}}\n"
    )
    code, out, err = await asyncio.to_thread(run_cli, cluster.url(), "job", "apply", "-f", str(doc))
    assert code == 0, err
    assert "job default/early applied" in out
    assert "warning: job default/early schedules.0: 02:30 does not exist on " in err
    assert "does not run that day (dst.gap: skip)" in err
    doc.write_text(doc.read_text().replace("skip", "shift"))
    code, out, err = await asyncio.to_thread(run_cli, cluster.url(), "apply", "-f", str(doc.parent))
    assert code == 0, err
    assert "warning: Job default/early schedules.0: " in err and "runs at 03:00 instead" in err


async def test_the_ticks_view_flags_the_next_transition(cluster):
    from datetime import UTC, datetime, timedelta
    from zoneinfo import ZoneInfo

    from cluster.cron_zones import transitions

    await cluster.start()
    now = datetime.now(UTC).replace(tzinfo=None)
    gap = next(
        t
        for t in transitions(ZoneInfo("America/New_York"), now, now + timedelta(days=366))
        if t.kind == "gap"
    )
    job = {
        "command": "true",
        "schedules": [
            {"cron": f"30 2 {gap.before.day} {gap.before.month} *", "timezone": "America/New_York"}
        ],
    }
    status, body = await cluster.request("PUT", "/api/v1/projects/default/jobs/spring", json=job)
    assert status == 201, body
    status, ticks = await cluster.request("GET", "/api/v1/projects/default/jobs/spring/ticks")
    assert status == 200, ticks
    first = ticks["next"][0]
    assert first["dst"] == "gap_shifted", ticks["next"]
    assert datetime.fromisoformat(first["tick"]) == gap.instant.replace(tzinfo=UTC)
    assert ticks["next"][1]["dst"] is None  # the same date a year later: an ordinary day
