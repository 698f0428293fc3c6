"""The gateway's web dashboard (``/dashboard``): services, endpoints, live stats and live events.

The gateway mounts `routes` when ``GatewayConfig.dashboard`` is true. The page is plain HTML,
JavaScript and CSS shipped in ``static/`` (no build step, nothing fetched from the internet).
"""

from __future__ import annotations

from eventmicro.gateway.dashboard._routes import routes

__all__ = ["routes"]
