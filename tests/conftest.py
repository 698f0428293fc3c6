"""Shared test configuration. The NATS fixtures come from eventmicro's own pytest plugin."""

pytest_plugins = ("pytester",)
