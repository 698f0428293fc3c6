"""Review fixes of the dashboard, in a real headless browser (Debian's chromium driven by Playwright)
against the real gateway, a real eventmicro service and a foreign one on a real nats-server."""

from __future__ import annotations

import contextlib
import json
import os
import re
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Final

import pytest
import pytest_asyncio
from playwright.async_api import Browser, Page, async_playwright, expect

from eventmicro import Connection, Message, Service
from eventmicro.gateway import GatewayConfig, create_app, serving

CHROMIUM: Final = Path(os.environ.get("EVENTMICRO_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS: Final = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
WAIT: Final = 15_000  # ms: the longest an expectation waits (the page polls every 2 s)


@pytest_asyncio.fixture
async def browser() -> AsyncIterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(f"chromium is not installed at {CHROMIUM}: `make browser` installs it")
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            await launched.close()


@contextlib.asynccontextmanager
async def open_page(browser: Browser, url: str) -> AsyncIterator[Page]:
    """A page at ``url``; fails the test if the page's script throws."""
    page = await browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    try:
        await page.goto(url)
        yield page
        assert not errors, errors
    finally:
        await page.close()


@contextlib.asynccontextmanager
async def foreign_service(connection: Connection, name: str, stats_data: Any) -> AsyncIterator[None]:
    """A service in another language as discovery sees it: ADR-32 leaves STATS ``data`` to it."""
    common = {"name": name, "id": "foreign-1", "version": "0.1.0"}
    info = {**common, "type": "io.nats.micro.v1.info_response", "metadata": {}, "endpoints": []}
    stats = {**common, "type": "io.nats.micro.v1.stats_response", "started": "2026-01-01T00:00:00Z",
             "endpoints": [], "data": stats_data}  # fmt: skip

    def answering(document: dict[str, Any]) -> Any:
        async def answer(msg: Message) -> None:
            await connection.publish(msg.reply, json.dumps(document).encode())

        return answer

    subscriptions = [
        await connection.subscribe(subject, answering(document))
        for subject, document in (
            ("$SRV.INFO", info),
            (f"$SRV.INFO.{name}", info),
            ("$SRV.STATS", stats),
            (f"$SRV.STATS.{name}", stats),
        )
    ]
    await connection.flush()
    try:
        yield
    finally:
        for subscription in subscriptions:
            await subscription.unsubscribe()


async def test_a_foreign_services_odd_stats_data_leaves_the_live_stats_working(
    nats_connection: Connection, browser: Browser
) -> None:
    ours, foreign = f"ours{uuid.uuid4().hex[:6]}", f"foreign{uuid.uuid4().hex[:6]}"
    svc = Service(ours, version="1.0.0")

    @svc.rpc
    async def echo(text: str) -> str:
        return text

    odd = {"events": {"orders": None, "payments": 7, "shipments": {"received": 2, "errors": 0}}}
    async with (
        svc.serving(nats_connection),
        foreign_service(nats_connection, foreign, odd),
        serving(create_app(nats_connection, GatewayConfig())) as base,
        open_page(browser, f"{base}/dashboard/") as page,
    ):
        status = page.get_by_test_id("status")
        await expect(status).to_have_attribute("data-state", "ok", timeout=WAIT)
        await expect(status).to_have_text(re.compile(r"^connected · \d+ services?$"))
        card = page.locator(f'[data-testid="service"][data-service="{foreign}"]')
        events_cell = card.locator('[data-stat^="events:"]')
        await expect(events_cell).to_have_text("shipments: 2 / 0", timeout=WAIT)
        ours_card = page.locator(f'[data-testid="service"][data-service="{ours}"]')
        await expect(ours_card.locator('[data-stat^="health:"]')).to_have_text("ready", timeout=WAIT)
