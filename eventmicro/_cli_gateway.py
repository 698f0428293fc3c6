"""placeholder: filled in by the issue 6 work."""

from __future__ import annotations

from typing import Any


def add_parser(commands: Any) -> None:
    """Register nothing yet."""
