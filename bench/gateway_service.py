"""The endpoint of the gateway benchmark: ``eventmicro run bench.gateway_service --url URL``.

``benchstock.stock`` takes a ``shop.inventory.v1.GetStockRequest`` and answers a ``StockLevel``
(a few bytes each way), doing no work of its own: what is measured is the path to it.
"""

from __future__ import annotations

from eventmicro import Service
from schemas.shop.inventory.v1 import inventory_pb2 as inventory

svc = Service("benchstock", version="1.0.0", description="the gateway benchmark's endpoint")


@svc.rpc
async def stock(req: inventory.GetStockRequest) -> inventory.StockLevel:
    return inventory.StockLevel(sku=req.sku, available=len(req.sku), reserved=1)
