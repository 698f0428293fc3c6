"""What the gateway knows of the services: ``$SRV.INFO`` answers, reused for a short while.

A call asks ``$SRV.INFO.<service>`` once per ``ttl`` seconds (concurrent callers share the
one request); a service that stops answering (no responders) is forgotten at once, so the
next call looks again. Nothing is registered anywhere: discovery is the only source.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Final

from eventmicro.service.discovery import discover
from eventmicro.service.endpoints import service_info
from eventmicro.transport.connection import Connection

__all__ = ["Catalog"]

INFO_TIMEOUT: Final = 2.0  # seconds to wait for a service's first $SRV.INFO answer
DISCOVERY_WINDOW: Final = 0.3  # seconds to collect every instance's answer for the documents


class Catalog:
    """``$SRV.INFO`` answers by service name, cached for ``ttl`` seconds."""

    def __init__(self, connection: Connection, ttl: float) -> None:
        self.connection = connection
        self.ttl = ttl
        self._info: dict[str, tuple[float, dict[str, Any]]] = {}
        self._asking: dict[str, asyncio.Task[dict[str, Any]]] = {}
        self._all: tuple[float, list[dict[str, Any]]] | None = None
        self._discovering: asyncio.Task[list[dict[str, Any]]] | None = None

    async def info(self, service: str) -> dict[str, Any]:
        """One instance's ``$SRV.INFO`` answer; raises `EndpointNotFound` when nobody answers."""
        cached = self._info.get(service)
        if cached is not None and time.monotonic() - cached[0] < self.ttl:
            return cached[1]
        asking = self._asking.get(service)
        if asking is None:  # one request for all the callers, not tied to any one of them
            asking = asyncio.create_task(service_info(self.connection, service, INFO_TIMEOUT))
            self._asking[service] = asking
            asking.add_done_callback(lambda task: self._answered(service, task))
        return await asyncio.shield(asking)  # a caller that goes away leaves the request running

    def _answered(self, service: str, task: asyncio.Task[dict[str, Any]]) -> None:
        del self._asking[service]
        if not task.cancelled() and task.exception() is None:  # an error reaches every caller
            self._info[service] = (time.monotonic(), task.result())

    def forget(self, service: str) -> None:
        """Drop what is known of ``service`` (it stopped answering)."""
        self._info.pop(service, None)
        self._all = None

    async def everything(self) -> list[dict[str, Any]]:
        """Every instance's ``$SRV.INFO`` answer (for the OpenAPI and AsyncAPI documents)."""
        if self._all is not None and time.monotonic() - self._all[0] < self.ttl:
            return self._all[1]
        if self._discovering is None:  # one discovery round for every concurrent caller
            self._discovering = asyncio.create_task(
                discover(self.connection, "INFO", window=DISCOVERY_WINDOW)
            )
            self._discovering.add_done_callback(self._discovered)
        return await asyncio.shield(self._discovering)

    def _discovered(self, task: asyncio.Task[list[dict[str, Any]]]) -> None:
        self._discovering = None
        if not task.cancelled() and task.exception() is None:
            self._all = (time.monotonic(), task.result())
