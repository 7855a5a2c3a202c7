"""Links into the web UI for messages that leave the cluster (alert e-mails, chat, webhooks).

A node cannot know how people reach it (its advertise address is often internal), so the links
are built from the cluster's public URL (``public_url``, D256), checked here once, at start. The
UI's pages are fragments of ``<public_url>/ui/``; each link names its project (``?project=``), so
it opens in the right project whatever the reader last selected. Pure: no I/O.
"""

from __future__ import annotations

import urllib.parse
from typing import Annotated, Any

from pydantic import AfterValidator

MAX_PUBLIC_URL = 512


def check_public_url(value: str) -> str:
    """``value`` as the base of every link (no trailing slash), or ValueError saying why.

    An http(s) URL with a host, and nothing a link must not carry: no user name or password (a
    credential mailed to everyone), no query or fragment (the UI's own part follows), no space
    or control character."""
    if len(value) > MAX_PUBLIC_URL:
        raise ValueError(f"public_url is longer than {MAX_PUBLIC_URL} characters")
    if any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise ValueError("public_url must not contain spaces or control characters")
    try:
        parts = urllib.parse.urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        raise ValueError(f"public_url is not a URL: {exc}") from exc
    if parts.scheme not in ("http", "https"):
        raise ValueError("public_url must start with http:// or https://")
    if not parts.hostname:
        raise ValueError("public_url needs a host, e.g. https://cron.example.com")
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise ValueError("public_url must not carry a user name or password")
    if parts.query or parts.fragment or "?" in value or "#" in value:
        raise ValueError("public_url must not have a query or a fragment")
    return value.rstrip("/")


def _checked(value: str | None) -> str | None:
    return check_public_url(value) if value else None


# The setting's type (``NodeConfig.public_url``): checked as it is read, naming the field.
PublicUrl = Annotated[str | None, AfterValidator(_checked)]


def _page(base: str, fragment: str, query: dict[str, str]) -> str:
    return f"{base}/ui/#/{fragment}?{urllib.parse.urlencode(query, quote_via=urllib.parse.quote)}"


def _part(value: str) -> str:
    return urllib.parse.quote(value, safe="")


def run_links(base: str | None, run: dict[str, Any]) -> dict[str, str]:
    """The UI pages about a run (a run document as JSON): ``run``; for a workflow task's run
    also ``execution`` (opened at the task), for a job's run also ``job``. A message about a
    slot that has no run (no ``id``) gets the job's (or workflow's, ``@name``) page only.
    Empty without a public URL."""
    if not base:
        return {}
    project = str(run["project"])
    links: dict[str, str] = {}
    if run.get("id"):
        links["run"] = _page(base, f"runs/{_part(str(run['id']))}", {"project": project})
    job = str(run.get("job") or "")
    if run.get("execution"):
        query = {"task": str(run.get("task") or ""), "project": project}
        links["execution"] = _page(base, f"executions/{_part(str(run['execution']))}", query)
    elif job.startswith("@"):  # a workflow's own slot: ``@<workflow>``
        name = job[1:].split(":", 1)[0]
        links["workflow"] = _page(base, f"workflows/{_part(name)}", {"project": project})
    elif job:
        links["job"] = job_link(base, project, job)
    return links


def with_links(base: str | None, run: dict[str, Any]) -> dict[str, Any]:
    """``run`` with its ``links`` (a copy; as it is when it has them or there is no base)."""
    if not base or "links" in run:
        return run
    return {**run, "links": run_links(base, run)}


def job_link(base: str, project: str, job: str) -> str:
    """A job's page (for messages about a job rather than one run)."""
    return _page(base, f"jobs/{_part(job)}", {"project": project})
