"""Liveness and readiness of service instances, for ``$SRV.STATS`` and Kubernetes probes.

::

    from eventmicro import health

    async with svc.serving(conn) as running:
        endpoint = await health.serve(8080, [running])     # GET /healthz, /readyz: 200 or 503
        health.check(running).ready

or ``Service.run(health_port=8080)`` / ``EVENTMICRO_HEALTH_PORT=8080``. ``$SRV.STATS`` answers
carry the same document in ``data.health``. No dependency.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from eventmicro.observability.health import Health, check, probe
from eventmicro.observability.http import HttpEndpoint
from eventmicro.observability.http import serve as _serve

if TYPE_CHECKING:  # pragma: no cover
    from eventmicro.service.running import Running

__all__ = ["Health", "HttpEndpoint", "check", "probe", "serve"]


async def serve(
    port: int = 0, instances: Sequence[Running] = (), host: str | None = "127.0.0.1", *, metrics: bool = False
) -> HttpEndpoint:
    """Serve ``/healthz`` and ``/readyz`` for ``instances`` (a list may be filled later) on
    ``host:port``; ``metrics=True`` serves ``/metrics`` there too."""
    return await _serve(port, host, metrics=metrics, instances=instances)
