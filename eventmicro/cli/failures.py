"""How a CLI verb fails as expected: `ToolError`, the exit codes, and the `runner` that maps them.

Exit codes: 0 done, 1 the service answered an error (or nothing in time), 2 bad usage or
input, or no NATS, 3 no such service, endpoint or type. An expected failure is one line on
stderr (``eventmicro: error: ...``), never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Coroutine
from typing import Any, Final

__all__ = ["BAD_INPUT", "SERVICE_FAILED", "UNKNOWN", "ToolError", "runner"]

# exit codes of the tools
SERVICE_FAILED: Final = 1  # the service answered an error, or did not answer in time
BAD_INPUT: Final = 2  # usage, bad JSON, no server
UNKNOWN: Final = 3  # no such service, endpoint or type


class ToolError(Exception):
    """An expected failure of a CLI tool: printed as one line, then exit with ``exit_code``."""

    def __init__(self, message: str, exit_code: int = BAD_INPUT) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def runner(
    command: Callable[[argparse.Namespace], Coroutine[Any, Any, int]],
) -> Callable[[argparse.Namespace], int]:
    """The ``run`` of a subcommand: ``asyncio.run`` it, a `ToolError` becoming one line and its code.

    Errors of the library (`EventMicroError`: no server, bad options, a schema package that
    cannot be imported) are left to `eventmicro.cli.main.main`, which prints them the same way
    with exit code 2.
    """

    def run(args: argparse.Namespace) -> int:
        try:
            return asyncio.run(command(args))
        except ToolError as exc:
            print(f"eventmicro: error: {exc}", file=sys.stderr)
            return exc.exit_code

    return run
