"""The Lambda runtime: the entry point, the invocation's context, the function's name.

The entry point is a sync ``handler(event, context)`` around an async handler.

Lambda calls handlers synchronously. ``asyncio.run`` per invocation would make
a new event loop each time, and with it a new DynamoDB client and new
connections. ``lambda_entry_point`` keeps one loop for the life of the
execution environment, so warm invocations reuse the store's client.

Stores given as ``open_stores`` open their clients on that loop when the entry
point is built, which is the module's import: Lambda's INIT phase. The first
invocation then pays only for its own requests, as with a boto3 client made at
import.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Awaitable, Callable, Iterable, Iterator
from contextvars import ContextVar
from typing import Any, Generic, Protocol, TypeVar

R = TypeVar("R")


def lambda_function_name() -> str | None:
    """``AWS_LAMBDA_FUNCTION_NAME`` as set: None when unset, possibly empty."""
    return os.environ.get("AWS_LAMBDA_FUNCTION_NAME")


_lambda_context: ContextVar[Any] = ContextVar("idemstore_lambda_context", default=None)


def register_lambda_context(lambda_context: Any) -> None:
    """Make the Lambda context known to idempotent functions in this task.

    Sets a task-local variable: concurrent invocations never see each other's
    context, and no shared object is modified.
    """
    _lambda_context.set(lambda_context)


@contextlib.contextmanager
def lambda_context_scope(lambda_context: Any) -> Iterator[None]:
    """The context registered for the duration of one handler call, then the previous one."""
    token = _lambda_context.set(lambda_context)
    try:
        yield
    finally:
        _lambda_context.reset(token)


def current_lambda_context() -> Any:
    return _lambda_context.get()


class OpenableStore(Protocol):
    """A store whose client can be opened ahead of its first use (``AsyncDynamoStore``)."""

    async def open(self) -> None: ...

    async def aclose(self) -> None: ...


class LambdaEntryPoint(Generic[R]):
    """A sync callable that runs the async handler on one persistent event loop."""

    def __init__(
        self,
        handler: Callable[[Any, Any], Awaitable[R]],
        *,
        open_stores: Iterable[OpenableStore] = (),
    ) -> None:
        self.handler = handler
        self._loop: asyncio.AbstractEventLoop | None = None
        stores = list(open_stores)
        if stores:
            self._open_stores(stores)

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None or self._loop.is_closed():
            self._loop = asyncio.new_event_loop()
        return self._loop

    def _open_stores(self, stores: Iterable[OpenableStore]) -> None:
        """Open each store's client on this entry point's loop, one after another.

        A store that cannot open (no region, say) raises here, at INIT, rather than
        on the first invocation; the stores opened so far are closed, and the loop,
        before the error propagates.
        """
        loop = self.loop
        opened: list[OpenableStore] = []
        try:
            for store in stores:
                opened.append(store)
                loop.run_until_complete(store.open())
        except BaseException:
            for store in opened:
                loop.run_until_complete(store.aclose())
            self.close()
            raise

    def __call__(self, event: Any, context: Any) -> R:
        return self.loop.run_until_complete(self.handler(event, context))

    def close(self) -> None:
        """Close the loop (tests and shutdown hooks; Lambda itself never needs this)."""
        if self._loop is not None and not self._loop.is_closed():
            self._loop.run_until_complete(self._loop.shutdown_asyncgens())
            self._loop.close()
        self._loop = None


def lambda_entry_point(
    handler: Callable[[Any, Any], Awaitable[R]],
    *,
    open_stores: Iterable[OpenableStore] = (),
) -> LambdaEntryPoint[R]:
    """``handler = lambda_entry_point(async_handler)``: what Lambda's runtime should call.

    ``open_stores=[store]`` opens the stores' clients now, during INIT, so that the
    first invocation does not build one.
    """
    return LambdaEntryPoint(handler, open_stores=open_stores)
