"""The Lambda entry point: a sync ``handler(event, context)`` around an async handler.

Lambda calls handlers synchronously. ``asyncio.run`` per invocation would make
a new event loop each time, and with it a new DynamoDB client and new
connections. ``lambda_entry_point`` keeps one loop for the life of the
execution environment, so warm invocations reuse the store's client.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

R = TypeVar("R")


class LambdaEntryPoint(Generic[R]):
    """A sync callable that runs the async handler on one persistent event loop."""

    def __init__(self, handler: Callable[[Any, Any], Awaitable[R]]) -> None:
        self.handler = handler
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None or self._loop.is_closed():
            self._loop = asyncio.new_event_loop()
        return self._loop

    def __call__(self, event: Any, context: Any) -> R:
        return self.loop.run_until_complete(self.handler(event, context))

    def close(self) -> None:
        """Close the loop (tests and shutdown hooks; Lambda itself never needs this)."""
        if self._loop is not None and not self._loop.is_closed():
            self._loop.run_until_complete(self._loop.shutdown_asyncgens())
            self._loop.close()
        self._loop = None


def lambda_entry_point(handler: Callable[[Any, Any], Awaitable[R]]) -> LambdaEntryPoint[R]:
    """``handler = lambda_entry_point(async_handler)``: what Lambda's runtime should call."""
    return LambdaEntryPoint(handler)
