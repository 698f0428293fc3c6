"""The HTTP gateway (``pip install 'eventmicro[gateway]'``): services and events over HTTP."""

from __future__ import annotations

from eventmicro.gateway._config import GatewayConfig

__all__ = ["GatewayConfig"]
