"""eventmicro and a NATS JavaScript client (nats.js, from npm), in both directions.

The JS side lives in tests/interop/js (``make test`` installs its dependency with ``npm ci``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from eventmicro import Client, Connection, NatsServer, NotFound, Service, discover

JS = Path(__file__).resolve().parent.parent / "interop" / "js"
NODE = shutil.which("node")

pytestmark = pytest.mark.skipif(
    NODE is None or not (JS / "node_modules" / "nats").is_dir(),
    reason="needs node and `npm ci` in tests/interop/js (make test does both)",
)


@dataclasses.dataclass
class Numbers:
    numbers: list[int]


@dataclasses.dataclass
class Sum:
    total: int


async def test_nats_js_discovers_and_calls_an_eventmicro_service(
    nats_server: NatsServer, conn: Connection
) -> None:
    svc = Service("calc", version="2.1.0", description="Adds numbers")

    @svc.rpc
    async def add(req: Numbers) -> Sum:
        return Sum(total=sum(req.numbers))

    async with svc.serving(conn) as running:
        result = await asyncio.to_thread(
            subprocess.run,
            [str(NODE), "interop.mjs", "call", nats_server.url, "calc", "add", '{"numbers": [1, 2, 3]}'],
            cwd=JS,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout)
    assert seen["pings"] == [{"name": "calc", "id": running.id, "version": "2.1.0"}]
    assert seen["endpoint"]["subject"] == "calc.add"
    assert seen["endpoint"]["queue_group"] == "calc"
    assert seen["statsEndpoints"] == ["add"]
    assert seen["reply"]["body"] == {"total": 6}
    assert seen["reply"]["type"].endswith("Sum")
    assert seen["bad"]["code"] == "400"
    assert "Numbers" in seen["bad"]["error"]


async def test_eventmicro_calls_a_nats_js_service_and_reads_its_errors(
    nats_server: NatsServer, conn: Connection
) -> None:
    process = await asyncio.create_subprocess_exec(
        str(NODE), "interop.mjs", "serve", nats_server.url, cwd=JS, stdout=asyncio.subprocess.PIPE
    )
    try:
        assert process.stdout is not None
        assert (await asyncio.wait_for(process.stdout.readline(), 30)).strip() == b"ready"
        client = Client(conn)
        assert await client.call("echo", "hi there", returns=bytes) == b"HI THERE"
        with pytest.raises(NotFound) as caught:
            await client.call("echo", "missing", returns=bytes)
        assert caught.value.detail == "no such thing"
        infos = await discover(conn, "INFO", "jsecho", window=0.3)
        assert [e["name"] for e in infos[0]["endpoints"]] == ["echo"]
    finally:
        process.terminate()
        await asyncio.wait_for(process.wait(), 30)
