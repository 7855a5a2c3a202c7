"""The CLI's one error mapping (D215): an API error is printed the same by every command."""

from __future__ import annotations

from nodes.cli.client import ApiError


def test_an_api_error_names_its_message_and_field():
    body = {"error": {"code": "invalid", "message": "bad cron", "field": "schedules.0.cron"}}
    assert ApiError(400, body).describe() == "cronmesh: bad cron (field: schedules.0.cron)"
    assert ApiError(404, {"error": {"message": "no job"}}).describe() == "cronmesh: no job"
    assert ApiError(502, "bad gateway").describe() == "cronmesh: bad gateway"
