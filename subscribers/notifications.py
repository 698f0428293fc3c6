"""The notifications service: tells the customer how their order ended. A broadcast subscriber:
every instance sees every settled order (as a fleet of push gateways would)."""

from __future__ import annotations

import collections

from eventmicro import Broadcast, Service
from schemas.shop.notifications.v1 import notifications_pb2 as notifications
from schemas.shop.orders.v1 import orders_pb2 as orders
from subscribers.shop import main

svc = Service("notifications", version="1.0.0", description="Tells customers about their orders")
sent: collections.deque[notifications.Notification] = collections.deque(maxlen=1000)


@svc.subscribe(delivery=Broadcast())
async def on_confirmed(event: orders.OrderConfirmed) -> None:
    sent.appendleft(notifications.Notification(order_id=event.order_id, text="your order is confirmed"))


@svc.subscribe(delivery=Broadcast())
async def on_cancelled(event: orders.OrderCancelled) -> None:
    text = f"your order was cancelled ({event.reason})"
    sent.appendleft(notifications.Notification(order_id=event.order_id, text=text))


@svc.rpc
async def recent(req: notifications.RecentNotifications) -> notifications.NotificationList:
    limit = req.limit if req.limit > 0 else 20
    return notifications.NotificationList(notifications=list(sent)[:limit])


if __name__ == "__main__":
    main(svc)
