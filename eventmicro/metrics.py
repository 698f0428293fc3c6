"""Prometheus metrics per service and handler (``pip install 'eventmicro[metrics]'``).

::

    from eventmicro import metrics

    metrics.enable()                          # before the services start; idempotent
    endpoint = await metrics.serve(9464)      # GET /metrics (prometheus-client exposition)

or ``Service.run(metrics_port=9464)`` / ``EVENTMICRO_METRICS_PORT=9464``. The metrics, their
labels and what they count are listed in `eventmicro.observability.metrics`.
"""

from __future__ import annotations

from eventmicro.observability.http import HttpEndpoint
from eventmicro.observability.http import serve as _serve
from eventmicro.observability.metrics import DEFAULT_BUCKETS, HandlerMetrics, Metrics, active, disable, enable

__all__ = [
    "DEFAULT_BUCKETS",
    "HandlerMetrics",
    "HttpEndpoint",
    "Metrics",
    "active",
    "disable",
    "enable",
    "serve",
]


async def serve(port: int = 0, host: str | None = "127.0.0.1") -> HttpEndpoint:
    """Serve ``/metrics`` on ``host:port`` (``host=None``: every interface); enables metrics."""
    return await _serve(port, host, metrics=True)
