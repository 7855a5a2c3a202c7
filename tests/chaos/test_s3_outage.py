"""Criterion 6 of the reliability suite (short; long: python -m tests.chaos.s3_outage)."""

from __future__ import annotations

import pytest

from tests.chaos.s3_outage import S3Fault, scenario
from tests.chaos.scenario import stage
from tests.integration.test_logs_s3 import new_bucket
from tests.seaweed import SeaweedS3


@pytest.mark.slow
@pytest.mark.timeout(400)
async def test_s3_refused_silent_and_slowdown_lose_no_log_line_and_change_no_outcome(
    tmp_path, monkeypatch, s3_server: SeaweedS3
):
    # The session's S3 server (a bucket of its own): the faults are the proxy's, the server is
    # never stopped (D108), so starting one more (~8 s) bought nothing (D328).
    s3 = s3_server
    fault = await S3Fault(s3.ports["s3"]).start()
    try:
        for k, v in s3.env().items():
            if k != "AWS_ENDPOINT_URL":  # the nodes go through the fault proxy
                monkeypatch.setenv(k, v)
        bucket = new_bucket(s3)
        async with stage(tmp_path, nodes=0, lease_ttl=3) as st:
            result = await scenario(st, s3, fault, bucket, each=10, lease_ttl=3)
    finally:
        await fault.close()
    report = result["report"]
    assert [p["connections"] > 0 for p in result["phases"]] == [False, True, True], result
    assert report.duplicates == {} and report.missed == [], report.as_dict()
    assert report.lost_final == [] and report.unfinished == [], report.as_dict()
    assert result["failed_runs"] == [], result
    # the outage filled the spool (a peak of 0 would mean the reads saw nothing), within its cap
    assert 0 < result["spool_peak_bytes"] <= result["spool_cap_bytes"], result
    hist = result["history"]
    assert hist.executed_twice == {} and hist.phantoms == [] and hist.ok, hist.as_dict()
    assert result["logs"] == {"missing": [], "broken": []}, result["logs"]
    assert result["runs"] >= 30
