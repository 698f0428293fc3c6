"""The observability layer: health, metrics, tracing, structured logs and their HTTP endpoint.

Instruments that the service layer drives and that read a running instance through the small
protocols declared here (`eventmicro.observability.instance`), never through its private
fields. Metrics and tracing are optional extras, imported only when switched on.
"""
