"""Fixtures of the browser tests: Debian's Chromium driven by Playwright (never Playwright's own
browser download), a logged-in page, and screenshots into the test output.

Screenshots go to ``$CRONMESH_SCREENSHOTS`` (default ``test-output/ui``); with
``CRONMESH_DOC_IMAGES=1`` each is also copied to ``docs/images/`` (how the docs' images are made).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, Page, async_playwright, expect

from tests.conftest import ROOT

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SHOTS = Path(os.environ.get("CRONMESH_SCREENSHOTS") or ROOT / "test-output" / "ui")
DOC_IMAGES = ROOT / "docs" / "images"
PASSWORD = "correct horse battery"

expect.set_options(timeout=20_000)  # a shared 2-core machine: generous, still a deadline


def _check_chromium() -> None:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: run .ci/bootstrap (it installs Debian's chromium)")


def _shot_path(name: str) -> Path:
    SHOTS.mkdir(parents=True, exist_ok=True)
    return SHOTS / f"{name}.png"


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    _check_chromium()
    async with async_playwright() as pw:
        b = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield b
        finally:
            await b.close()


class UI:
    """One browser page on a node, with the page's script errors collected (tests assert none)."""

    def __init__(self, page: Page, base: str) -> None:
        self.page = page
        self.base = base
        self.errors: list[str] = []
        page.on("pageerror", lambda exc: self.errors.append(str(exc)))

    async def go(self, fragment: str) -> None:
        await self.page.goto(f"{self.base}/ui/{fragment}")

    async def login(self, user: str, password: str = PASSWORD) -> None:
        await self.page.goto(f"{self.base}/")
        await expect(self.page.get_by_role("heading", name="cronmesh")).to_be_visible()
        await self.page.get_by_label("User name").fill(user)
        await self.page.get_by_label("Password").fill(password)
        await self.page.get_by_role("button", name="Log in").click()
        await expect(self.page.get_by_role("heading", name="Dashboard")).to_be_visible()

    async def shot(self, name: str, **kw: Any) -> Path:
        path = _shot_path(name)
        await self.page.screenshot(path=str(path), full_page=True, **kw)
        if os.environ.get("CRONMESH_DOC_IMAGES") == "1":
            _keep_for_docs(path)
        return path


def _keep_for_docs(path: Path) -> None:
    DOC_IMAGES.mkdir(parents=True, exist_ok=True)
    shutil.copy(path, DOC_IMAGES / path.name)


@pytest.fixture
async def ui_factory(browser: Browser) -> AsyncIterator[Any]:
    made: list[UI] = []

    async def make(base: str, width: int = 1280, height: int = 860, **context_kw: Any) -> UI:
        """``context_kw``: Playwright context options, e.g. ``timezone_id="Europe/Berlin"``."""
        context = await browser.new_context(
            viewport={"width": width, "height": height}, **context_kw
        )
        ui = UI(await context.new_page(), base)
        made.append(ui)
        return ui

    yield make
    errors = [e for ui in made for e in ui.errors]
    for ui in made:
        await ui.page.context.close()
    assert not errors, f"script errors in the page: {errors}"


async def make_user(cluster: Any, name: str, roles: dict[str, str]) -> None:
    status, body = await cluster.request(
        "POST", "/api/v1/users", json={"name": name, "password": PASSWORD, "roles": roles}
    )
    assert status == 201, body
