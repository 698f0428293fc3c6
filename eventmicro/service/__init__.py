"""The service layer: services, handlers, dispatch, the client, durable intake, discovery.

A `Service` is what its decorators declared; a running instance subscribes, admits, runs and
answers. The client calls services by name and publishes events. Built on the transport and
wire layers; it drives the observability instruments.
"""
