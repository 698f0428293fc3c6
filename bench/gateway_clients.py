"""The gateway's client gate alone: CPU per request by number of clients.

Run: ``.venv/bin/python -m bench.gateway_clients``.

The gate (eventmicro/gateway/_access.py) runs in front of a trivial ASGI app that answers 200,
called directly (no socket, no NATS), so the figure is what identifying a client (sha256 of
its token, a dict lookup, a constant-time comparison), its token bucket, the counters and the
access-log call (logging at WARNING: the record is not built) add to each request. ``none`` is
the trivial app without the gate.
"""

from __future__ import annotations

import asyncio
import time
from typing import Final

from starlette.types import Message, Receive, Scope, Send

from eventmicro.gateway import GatewayClient, mint_token
from eventmicro.gateway._access import Counters, Gate

SIZES: Final = (1, 100, 10_000)
REQUESTS: Final = 50_000


async def ok(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b""})


async def receive() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}


async def send(message: Message) -> None:
    return None


async def per_request(app: object, token: str) -> float:
    """CPU µs per request through ``app`` (an ASGI callable)."""
    headers = [(b"authorization", f"Bearer {token}".encode())]
    scope = {"type": "http", "method": "POST", "path": "/api/stock/get", "headers": headers}
    started = time.process_time()
    for _ in range(REQUESTS):
        await app(dict(scope), receive, send)  # type: ignore[operator]
    return (time.process_time() - started) / REQUESTS * 1e6


async def main() -> None:
    print(f"  {'clients':>8} {'µs/request':>11}")
    print(f"  {'none':>8} {await per_request(ok, 'x'):11.1f}")
    for size in SIZES:
        minted = [mint_token() for _ in range(size)]
        clients = [
            GatewayClient(id=f"c{i}", token_sha256=digest, services=("*",), rate=1e9, burst=10**9)
            for i, (_, digest) in enumerate(minted)
        ]
        gate = Gate(ok, clients, Counters())
        print(f"  {size:>8} {await per_request(gate, minted[-1][0]):11.1f}")


if __name__ == "__main__":
    asyncio.run(main())
