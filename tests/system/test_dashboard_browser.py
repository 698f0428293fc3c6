"""The dashboard in a real headless browser (Debian's chromium driven by Playwright), against the
real gateway and the reference shop's services on a nats-server of this module's own.

Screenshots of each test go to ``artifacts/screenshots/`` at the repository root.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import re
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, Final

import pytest
import pytest_asyncio
from playwright.async_api import Browser, ConsoleMessage, Locator, Page, Route, async_playwright, expect
from prometheus_client import CollectorRegistry

from eventmicro import (
    BreakerPolicy,
    Client,
    Connection,
    ConnectOptions,
    Context,
    Message,
    NatsServer,
    RetryPolicy,
    Service,
    ServiceError,
)
from eventmicro import metrics as em_metrics
from eventmicro.gateway import GatewayConfig, create_app, serving
from schemas.shop.orders.v1 import orders_pb2 as orders
from schemas.shop.orders.v1.orders_micro import OrdersClient
from subscribers import audit, billing, notifications, shop
from subscribers import inventory as inventory_service
from subscribers import orders as orders_service

CHROMIUM: Final = Path(os.environ.get("EVENTMICRO_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS: Final = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS: Final = Path(__file__).resolve().parents[2] / "artifacts" / "screenshots"
SHOP: Final = ("orders", "inventory", "billing", "notifications", "audit")
# orders placed while the page watches: their ~4 events each stay within the 200 the page keeps
ORDERS: Final = 30
WAIT: Final = 15_000  # ms: the longest any expectation waits (the page polls every 2 s)


@pytest.fixture(scope="module")
def shop_server() -> Iterator[NatsServer]:
    """The shop's JetStream streams and buckets stay off the session server."""
    with NatsServer() as server:
        yield server


@pytest_asyncio.fixture
async def shop_client(shop_server: NatsServer) -> AsyncIterator[Client]:
    """The reference shop served in this process: orders and inventory twice, as in the demo."""
    async with (
        Connection(ConnectOptions.from_env(shop_server.url, environ={})) as connection,
        contextlib.AsyncExitStack() as stack,
    ):
        for module in (orders_service, orders_service, inventory_service, inventory_service,
                       billing, notifications, audit):  # fmt: skip
            await stack.enter_async_context(module.svc.serving(connection))
        yield Client(connection, source="/dashboard-browser-test")


@contextlib.asynccontextmanager
async def gateway(server: NatsServer, config: GatewayConfig) -> AsyncIterator[str]:
    """The real gateway (with its dashboard) on its own NATS connection, served over HTTP."""
    options = ConnectOptions.from_env(server.url, environ={}, name="dashboard-browser-gateway")
    async with Connection(options) as connection, serving(create_app(connection, config)) as url:
        yield url


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
async def open_page(browser: Browser, url: str, *, expected: tuple[int, ...] = ()) -> AsyncIterator[Page]:
    """A page at ``url``; fails the test if the page's script throws or the browser logs an error:
    a blocked resource, a content-security-policy violation, an HTTP error not ``expected``."""
    page = await browser.new_page(viewport={"width": 1440, "height": 1100})
    problems: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        status = re.search(r"responded with a status of (\d+)", message.text)
        if message.type == "error" and not (status and int(status[1]) in expected):
            problems.append(f"console: {message.text}")

    page.on("pageerror", lambda error: problems.append(f"script error: {error}"))
    page.on("console", on_console)
    try:
        await page.goto(url)
        yield page
        assert not problems, problems
    finally:
        await page.close()


async def screenshot(page: Page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


async def place_orders(shop_client: Client, count: int) -> list[str]:
    """Place ``count`` orders as the demo does (16 at a time); returns the accepted order ids."""
    client = OrdersClient(shop_client)
    pending = iter(range(count))
    accepted: list[str] = []

    async def caller() -> None:
        for n in pending:
            item = orders.LineItem(sku=shop.SKUS[n % len(shop.SKUS)], quantity=1 + n % 3,
                                   unit_price_cents=shop.PRICE_CENTS)  # fmt: skip
            request = orders.PlaceOrder(customer_id=f"cust-{n:03d}", currency="EUR", items=[item])
            accepted.append((await client.place(request, timeout=10)).order_id)

    async with asyncio.TaskGroup() as group:
        for _ in range(16):
            group.create_task(caller())
    return accepted


async def expect_peak(page: Page, chart: str, series: str) -> None:
    """Wait until the chart's ``series`` has drawn a value above zero."""
    path = f'[data-chart="{chart}"] path[data-series="{series}"]'
    await page.wait_for_function(
        "path => Number(document.querySelector(path)?.dataset.peak) > 0", arg=path, timeout=WAIT
    )


def service_card(page: Page, name: str) -> Locator:
    return page.locator(f'[data-testid="service"][data-service="{name}"]')


# --- the tests --------------------------------------------------------------------------------


async def test_the_page_lists_the_shop_services_their_instances_endpoints_and_schemas(
    shop_server: NatsServer, shop_client: Client, browser: Browser
) -> None:
    async with (
        gateway(shop_server, GatewayConfig()) as base,
        open_page(browser, base + "/dashboard/") as page,
    ):
        for name in SHOP:
            await expect(service_card(page, name)).to_be_visible(timeout=WAIT)
        await expect(page.get_by_test_id("status")).to_have_text("connected · 5 services")
        orders_card = service_card(page, "orders")
        await expect(orders_card.get_by_test_id("instance-count")).to_have_text("2 instances")
        await expect(orders_card.get_by_test_id("instance")).to_have_count(2)
        await expect(orders_card.get_by_test_id("endpoint")).to_have_count(3)  # cancel, get, place
        await expect(orders_card.get_by_test_id("instance").first).to_contain_text("ready")
        await expect(orders_card.get_by_test_id("publishes")).to_contain_text("shop.orders.v1.OrderPlaced")
        await expect(orders_card.get_by_test_id("subscribes")).to_contain_text(
            "shop.billing.v1.PaymentCaptured"
        )

        # the request and reply schemas come from the gateway's /openapi.json
        stock = service_card(page, "inventory").locator('[data-testid="endpoint"][data-endpoint="get_stock"]')
        await expect(stock).to_contain_text("GetStockRequest → shop.inventory.v1.StockLevel")
        schemas = page.locator('[data-service="inventory"] [data-testid="endpoint-schemas"]')
        await schemas.locator("summary").click()
        await expect(schemas.get_by_test_id("schema-request").locator("pre")).to_contain_text('"sku"')
        await expect(schemas.get_by_test_id("schema-reply").locator("pre")).to_contain_text('"available"')
        place = page.locator('[data-service="orders"] [data-testid="endpoint-schemas"]').nth(2)
        await place.locator("summary").click()  # PlaceOrder refers to LineItem: shown with it
        await expect(place.get_by_test_id("schema-request")).to_contain_text("shop.orders.v1.LineItem")
        await screenshot(page, "dashboard-services")


async def test_live_events_and_stats_follow_the_orders_being_placed(
    shop_server: NatsServer, shop_client: Client, browser: Browser
) -> None:
    async with (
        gateway(shop_server, GatewayConfig()) as base,
        open_page(browser, base + "/dashboard/") as page,
    ):
        await expect(page.get_by_test_id("events-state")).to_have_text("live on events.>", timeout=WAIT)
        events = page.get_by_test_id("events")
        await shop_client.connection.publish("events.shop.junk", b"\xff\xfe not an order")  # as the demo does
        junk = events.locator(".event.malformed")  # shown, with the reason, not dropped
        await expect(junk).to_have_count(1, timeout=WAIT)
        await expect(junk.get_by_test_id("event-error")).to_contain_text("not a CloudEvent")
        await expect(junk).to_contain_text("events.shop.junk")
        accepted = await place_orders(shop_client, ORDERS)
        assert len(accepted) == ORDERS
        for event_type in ("shop.orders.v1.OrderPlaced", "shop.inventory.v1.StockReserved",
                           "shop.billing.v1.PaymentCaptured", "shop.orders.v1.OrderConfirmed"):  # fmt: skip
            await expect(events.locator(f'[data-type="{event_type}"]').first).to_be_visible(timeout=WAIT)
        count = int(await page.get_by_test_id("events-count").inner_text())
        assert count >= ORDERS
        # the data of an event is decoded from protobuf and shown when it is opened
        placed = events.locator('[data-type="shop.orders.v1.OrderPlaced"]').first
        await placed.locator("summary").click()
        await expect(placed.locator("pre")).to_contain_text('"orderId"')
        await expect(placed.locator("pre")).to_contain_text('"customerId": "cust-')
        # live stats: the orders' place endpoint, summed over both instances
        requests = page.locator('[data-stat="req:orders:place"]')
        await expect(requests).to_have_text(str(ORDERS), timeout=WAIT)
        # live charts: rates from the counters' change between polls, drawn as SVG paths
        await expect_peak(page, "traffic:orders:place", "calls/s")
        await expect_peak(page, "events:inventory:on_order_placed", "events/s")
        await expect_peak(page, "latency:orders:place", "average")
        latency = page.locator('[data-chart="latency:orders:place"]')
        await expect(latency.get_by_test_id("chart-note")).to_contain_text("p50 and p99 need")  # metrics off
        await screenshot(page, "dashboard-events")

        # a type filter reconnects the stream; only matching events arrive from then on
        await page.get_by_test_id("events-type").fill("shop.inventory.*")
        await page.get_by_test_id("events-apply").click()
        await expect(page.get_by_test_id("events-state")).to_have_text(
            "live on events.> · type shop.inventory.*"
        )
        await page.get_by_test_id("events-clear").click()  # what arrived before the switch
        await place_orders(shop_client, 5)
        await page.wait_for_function(
            "n => document.querySelectorAll('[data-type=\"shop.inventory.v1.StockReserved\"]').length >= n",
            arg=5,
            timeout=WAIT,
        )
        types = await events.get_by_test_id("event").evaluate_all("items => items.map(i => i.dataset.type)")
        assert all(t.startswith("shop.inventory.") for t in types), types
        await screenshot(page, "dashboard-events-filtered")


async def test_the_call_form_shows_the_reply_or_the_error(
    shop_server: NatsServer, shop_client: Client, browser: Browser
) -> None:
    async with (
        gateway(shop_server, GatewayConfig()) as base,
        open_page(browser, base + "/dashboard/", expected=(400, 404)) as page,
    ):
        stock = page.locator('[data-service="inventory"] [data-testid="endpoint"][data-endpoint="get_stock"]')
        await stock.get_by_test_id("try-endpoint").click(timeout=WAIT)
        await expect(page.get_by_test_id("call-service")).to_have_value("inventory")
        await expect(page.get_by_test_id("call-endpoint")).to_have_value("get_stock")
        body = page.get_by_test_id("call-body")
        await expect(body).to_have_value('{\n  "sku": ""\n}', timeout=WAIT)  # from GetStockRequest's schema
        await body.fill('{"sku": "sku-012"}')
        result = page.get_by_test_id("call-result")
        await page.get_by_test_id("call-submit").click()
        await expect(result).to_have_attribute("data-outcome", "ok")
        await expect(page.get_by_test_id("call-status")).to_have_text(re.compile(r"^200 OK"))
        await expect(page.get_by_test_id("call-reply")).to_contain_text('"sku": "sku-012"')
        await expect(page.get_by_test_id("call-reply")).to_contain_text('"available": ')

        # an order placed through the form, through the gateway's /api route ...
        await page.get_by_test_id("call-service").select_option("orders")
        await page.get_by_test_id("call-endpoint").select_option("place")
        prefilled = json.loads(await body.input_value())  # PlaceOrder's, not get_stock's body
        assert prefilled["customerId"] == ""
        assert set(prefilled["items"][0]) >= {"sku", "quantity", "unitPriceCents"}
        await expect(result).to_be_hidden()  # the previous endpoint's reply is gone too
        await page.get_by_test_id("call-body").fill(
            '{"customerId": "cust-form", "currency": "EUR", '
            '"items": [{"sku": "sku-003", "quantity": 2, "unitPriceCents": 1250}]}'
        )
        await page.get_by_test_id("call-submit").click()
        await expect(page.get_by_test_id("call-reply")).to_contain_text('"orderId"')
        await expect(result).to_have_attribute("data-outcome", "ok")
        # ... and its event in the live list
        placed = page.get_by_test_id("events").locator('[data-type="shop.orders.v1.OrderPlaced"]')
        await expect(placed).to_have_count(1, timeout=WAIT)
        await placed.locator("summary").click()
        await expect(placed.locator("pre")).to_contain_text('"customerId": "cust-form"')
        await screenshot(page, "dashboard-call")

        # a service's error: status and detail
        await page.get_by_test_id("call-endpoint").select_option("get")
        await page.get_by_test_id("call-body").fill('{"orderId": "no-such-order"}')
        await page.get_by_test_id("call-submit").click()
        await expect(result).to_have_attribute("data-outcome", "error")
        await expect(page.get_by_test_id("call-status")).to_have_text(re.compile(r"^404 Not Found · "))
        # an invalid order: 400 with the service's detail
        await page.get_by_test_id("call-endpoint").select_option("place")
        await page.get_by_test_id("call-body").fill('{"customerId": "c"}')
        await page.get_by_test_id("call-submit").click()
        await expect(page.get_by_test_id("call-status")).to_contain_text("an order needs at least one item")
        await expect(page.get_by_test_id("call-status")).to_have_text(re.compile(r"^400 Bad Request"))
        # not JSON: not sent at all
        await page.get_by_test_id("call-body").fill("{nope")
        await page.get_by_test_id("call-submit").click()
        await expect(result).to_have_attribute("data-outcome", "invalid")
        # back on get_stock: the body left there, not the one of place
        await page.get_by_test_id("call-service").select_option("inventory")
        await expect(body).to_have_value('{"sku": "sku-012"}')
        # a long error wraps inside the form instead of running off the page
        await body.fill(json.dumps({"sku": "sku-" + "x" * 400}))
        await page.get_by_test_id("call-submit").click()
        await expect(result).to_have_attribute("data-outcome", "error")
        status = page.get_by_test_id("call-status")
        assert await status.evaluate("node => node.scrollWidth <= node.clientWidth")
        assert await page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
        await screenshot(page, "dashboard-call-error")


async def test_a_token_is_asked_for_kept_for_the_session_and_sent(
    shop_server: NatsServer, shop_client: Client, browser: Browser
) -> None:
    config = GatewayConfig(token="open-sesame")
    async with (
        gateway(shop_server, config) as base,
        open_page(browser, base + "/dashboard", expected=(401,)) as page,
    ):
        form = page.get_by_test_id("token-form")
        await expect(form).to_be_visible(timeout=WAIT)
        await expect(page.get_by_test_id("services")).to_be_empty()
        await page.get_by_test_id("token-input").fill("wrong")
        await page.get_by_test_id("token-save").click()
        await expect(page.get_by_test_id("status")).to_have_text("the token was refused", timeout=WAIT)
        await expect(form).to_be_visible()
        await screenshot(page, "dashboard-token")

        await page.get_by_test_id("token-input").fill("open-sesame")
        await page.get_by_test_id("token-save").click()
        await expect(form).to_be_hidden()
        await expect(service_card(page, "orders")).to_be_visible(timeout=WAIT)
        await expect(page.get_by_test_id("events-state")).to_have_text("live on events.>", timeout=WAIT)
        stored = await page.evaluate("sessionStorage.getItem('eventmicro.gateway.dashboard.token')")
        assert stored == "open-sesame"

        await page.get_by_test_id("call-service").select_option("inventory")
        await page.get_by_test_id("call-body").fill('{"sku": "sku-001"}')
        await page.get_by_test_id("call-submit").click()
        await expect(page.get_by_test_id("call-result")).to_have_attribute("data-outcome", "ok")
        await place_orders(shop_client, 1)
        await expect(page.get_by_test_id("event").first).to_be_visible(timeout=WAIT)

        await page.reload()  # the token stays for the browser session
        await expect(service_card(page, "orders")).to_be_visible(timeout=WAIT)
        await expect(form).to_be_hidden()


async def test_the_page_says_when_events_were_dropped_for_it(
    shop_server: NatsServer, browser: Browser
) -> None:
    """The gateway drops the oldest events of a page that falls behind and says how many; a real
    browser is hard to slow down on purpose, so the first stream it opens is a recorded one."""
    recorded = (
        ': connected\n\nevent: ready\ndata: {"subject": "events.recorded", "type": ""}\n\n'
        'event: dropped\ndata: {"dropped": 7}\n\n'
        'data: {"subject": "events.a", "id": "1", "type": "t.one", "source": "/s", "data": {"n": 1}}\n\n'
    )
    served = 0

    async def first_stream_recorded(route: Route) -> None:
        nonlocal served
        served += 1
        if served == 1:
            await route.fulfill(status=200, content_type="text/event-stream", body=recorded)
        else:
            await route.continue_()  # the reconnection reaches the gateway

    async with gateway(shop_server, GatewayConfig()) as base:
        page = await browser.new_page()
        try:
            await page.route("**/dashboard/events*", first_stream_recorded)
            await page.goto(base + "/dashboard/")
            await expect(page.get_by_test_id("events-dropped")).to_have_text(
                "7 events were dropped: this page fell behind the stream "
                "(the gateway keeps a bounded queue per page).",
                timeout=WAIT,
            )
            await expect(page.locator('[data-testid="event"][data-type="t.one"]')).to_have_count(1)
            # the recorded stream ended; the page reconnects by itself, to the gateway this time
            await expect(page.get_by_test_id("events-state")).to_have_text("live on events.>", timeout=WAIT)
            assert served == 2
            await screenshot(page, "dashboard-dropped")
        finally:
            await page.close()


async def test_the_page_follows_the_demo_as_it_runs(fresh_nats_server: NatsServer, browser: Browser) -> None:
    """``eventmicro demo`` itself, as a user runs it, on a server the dashboard watches."""
    async with (
        gateway(fresh_nats_server, GatewayConfig()) as base,
        open_page(browser, base + "/dashboard/") as page,
    ):
        await expect(page.get_by_test_id("events-state")).to_have_text("live on events.>", timeout=WAIT)
        demo = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "eventmicro", "demo", "--url", fresh_nats_server.url, "--orders", "40",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        try:
            for name in SHOP:  # the demo's own processes, found by discovery
                await expect(service_card(page, name)).to_be_visible(timeout=60_000)
            events = page.get_by_test_id("events")
            for event_type in ("shop.orders.v1.OrderPlaced", "shop.orders.v1.OrderConfirmed"):
                await expect(events.locator(f'[data-type="{event_type}"]').first).to_be_visible(
                    timeout=60_000
                )
            await screenshot(page, "dashboard-demo")
            async with asyncio.timeout(90):
                output, _ = await demo.communicate()
        finally:
            if demo.returncode is None:
                demo.kill()
                await demo.wait()
        assert demo.returncode == 0, output.decode(errors="replace")[-2000:]
        assert re.search(rb"result +OK", output)
        # the demo's malformed event reached the page too, shown with its reason
        await expect(events.locator(".event.malformed")).not_to_have_count(0, timeout=WAIT)


@contextlib.asynccontextmanager
async def foreign_stats_service(connection: Connection, name: str, stats_data: Any) -> AsyncIterator[None]:
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

    odd = {
        "events": {"orders": None, "payments": 7, "shipments": {"received": 2, "errors": 0}},
        "circuits": {"a.b": "melted", "c.d": ["open"], "e.f": "half_open"},
    }
    async with (
        svc.serving(nats_connection),
        foreign_stats_service(nats_connection, foreign, odd),
        serving(create_app(nats_connection, GatewayConfig())) as base,
        open_page(browser, f"{base}/dashboard/") as page,
    ):
        status = page.get_by_test_id("status")
        await expect(status).to_have_attribute("data-state", "ok", timeout=WAIT)
        await expect(status).to_have_text(re.compile(r"^connected · \d+ services?$"))
        card = page.locator(f'[data-testid="service"][data-service="{foreign}"]')
        events_cell = card.locator('[data-stat^="events:"]')
        await expect(events_cell).to_have_text("shipments: 2 / 0", timeout=WAIT)
        circuits_cell = card.locator('[data-stat^="circuits:"]')
        await expect(circuits_cell).to_have_text("e.f: half-open", timeout=WAIT)
        await expect(circuits_cell).to_have_attribute("data-state", "warn")
        ours_card = page.locator(f'[data-testid="service"][data-service="{ours}"]')
        await expect(ours_card.locator('[data-stat^="health:"]')).to_have_text("ready", timeout=WAIT)


async def test_an_open_circuit_shows_on_the_instance_that_holds_it(
    nats_connection: Connection, browser: Browser
) -> None:
    """A service's handlers call a dependency that is gone: its circuit opens, the page says so."""
    name = f"front{uuid.uuid4().hex[:6]}"
    front = Service(
        name, version="1.0.0", retry=RetryPolicy.NEVER, breaker=BreakerPolicy(failures=2, open_for=60)
    )

    @front.rpc
    async def relay(text: str, ctx: Context) -> str:
        return await ctx.call(f"gone{name}.ask", text, returns=str)

    async with (
        front.serving(nats_connection),
        serving(create_app(nats_connection, GatewayConfig())) as base,
        open_page(browser, f"{base}/dashboard/") as page,
    ):
        card = page.locator(f'[data-testid="service"][data-service="{name}"]')
        circuits_cell = card.locator('[data-stat^="circuits:"]')
        await expect(circuits_cell).to_have_text("–", timeout=WAIT)  # no call yet: no circuit
        for _ in range(2):  # each fails (no responders): the second opens the circuit
            with pytest.raises(ServiceError):
                await Client(nats_connection).call(f"{name}.relay", "x", returns=str)
        await expect(circuits_cell).to_have_text(f"gone{name}.ask: open", timeout=WAIT)
        await expect(circuits_cell).to_have_attribute("data-state", "bad")
        await expect(card.locator("table.instances th").last).to_have_text("circuits of its calls")


@dataclasses.dataclass
class Quote:
    sku: str
    quantity: int = 1


@dataclasses.dataclass
class Price:
    sku: str
    cents: int


async def test_json_typed_endpoints_are_described_and_their_latency_charted(
    nats_connection: Connection, browser: Browser
) -> None:
    """A dataclass endpoint of a service with metrics on: its schema prefills the form, its
    calls draw p50 and p99 from the latency histogram in ``$SRV.STATS``."""
    name = f"quotes{uuid.uuid4().hex[:6]}"
    em_metrics.enable(CollectorRegistry(), buckets=(0.0005, 0.001, 0.005, 0.05, 0.5))
    try:
        svc = Service(name, version="1.0.0")

        @svc.rpc
        async def quote(req: Quote) -> Price:
            return Price(sku=req.sku, cents=250 * req.quantity)

        async with (
            svc.serving(nats_connection),
            serving(create_app(nats_connection, GatewayConfig())) as base,
            open_page(browser, f"{base}/dashboard/") as page,
        ):
            endpoint = page.locator(
                f'[data-service="{name}"] [data-testid="endpoint"][data-endpoint="quote"]'
            )
            await endpoint.get_by_test_id("try-endpoint").click(timeout=WAIT)
            body = page.get_by_test_id("call-body")
            await expect(body).to_have_value('{\n  "sku": "",\n  "quantity": 1\n}', timeout=WAIT)
            schemas = page.locator(f'[data-service="{name}"] [data-testid="endpoint-schemas"]')
            await schemas.locator("summary").click()
            await expect(schemas.get_by_test_id("schema-reply").locator("pre")).to_contain_text('"cents"')
            client = Client(nats_connection)
            for n in range(20):
                await client.call(f"{name}.quote", Quote(sku=f"s{n}"), returns=Price)
            await expect_peak(page, f"latency:{name}:quote", "p99")
            await expect_peak(page, f"traffic:{name}:quote", "calls/s")
            latency = page.locator(f'[data-chart="latency:{name}:quote"]')
            await expect(latency.get_by_test_id("chart-note")).to_be_hidden()
            await expect(latency.locator('[data-testid="chart-value"][data-series="p50"]')).to_be_visible()
            await expect(latency.locator('[data-testid="chart-value"][data-series="average"]')).to_be_hidden()
            await page.get_by_test_id("call-submit").click()
            await expect(page.get_by_test_id("call-reply")).to_contain_text('"cents": 250')
            await screenshot(page, "dashboard-charts-latency")
    finally:
        em_metrics.disable()
