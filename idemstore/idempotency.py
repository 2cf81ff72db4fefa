"""The decorators: ``idempotent`` for async Lambda handlers, ``idempotent_function`` for any
async function. Same names and arguments as the Powertools utility, plus ``await``.

Each decorated function gets its own engine (local cache, in-flight calls);
store and config are only read, so both may be shared by many functions.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, ParamSpec, TypeVar, overload

from idemstore.config import IdempotencyConfig
from idemstore.engine import IdempotencyEngine
from idemstore.keys import key_prefix as default_key_prefix
from idemstore.lambda_runtime import (
    current_lambda_context,
    lambda_context_scope,
    lambda_function_name,
)
from idemstore.serialization import BaseIdempotencySerializer, resolve_serializer
from idemstore.stores.contract import RecordStore

P = ParamSpec("P")
R = TypeVar("R")
Handler = TypeVar("Handler", bound=Callable[..., Awaitable[Any]])


def _require_async(function: Callable[..., Any], decorator: str) -> None:
    if not inspect.iscoroutinefunction(function):
        raise TypeError(
            f"@{decorator} needs an async function, and {function.__qualname__} is not one: "
            "a sync function would return before its result could be stored. Declare it "
            "with `async def`."
        )


def _engine(
    function: Callable[..., Any],
    store: RecordStore,
    config: IdempotencyConfig | None,
    key_prefix: str | None,
    output_serializer: BaseIdempotencySerializer | type[Any] | None,
) -> IdempotencyEngine:
    prefix = key_prefix or default_key_prefix(
        lambda_function_name(), function.__module__, function.__qualname__
    )
    return IdempotencyEngine(
        store,
        config or IdempotencyConfig(),
        key_prefix=prefix,
        serializer=resolve_serializer(function, output_serializer),
    )


@overload
def idempotent(
    handler: Handler,
    *,
    persistence_store: RecordStore,
    config: IdempotencyConfig | None = None,
    key_prefix: str | None = None,
) -> Handler: ...


@overload
def idempotent(
    handler: None = None,
    *,
    persistence_store: RecordStore,
    config: IdempotencyConfig | None = None,
    key_prefix: str | None = None,
) -> Callable[[Handler], Handler]: ...


def idempotent(
    handler: Handler | None = None,
    *,
    persistence_store: RecordStore,
    config: IdempotencyConfig | None = None,
    key_prefix: str | None = None,
) -> Handler | Callable[[Handler], Handler]:
    """Make an async Lambda handler ``handler(event, context)`` idempotent on its event.

    The lock lasts until the invocation's deadline, read from the context.
    """

    def decorate(function: Handler) -> Handler:
        _require_async(function, "idempotent")
        engine = _engine(function, persistence_store, config, key_prefix, None)

        @functools.wraps(function)
        async def wrapper(event: Any, context: Any, *args: Any, **kwargs: Any) -> Any:
            with lambda_context_scope(context):
                return await engine.run(
                    event,
                    lambda: function(event, context, *args, **kwargs),
                    lambda_context=context,
                )

        wrapper.idempotency_engine = engine  # type: ignore[attr-defined]  # introspection for tests
        return wrapper  # type: ignore[return-value]  # same call signature as the handler

    return decorate(handler) if handler is not None else decorate


def idempotent_function(
    *,
    data_keyword_argument: str,
    persistence_store: RecordStore,
    config: IdempotencyConfig | None = None,
    output_serializer: BaseIdempotencySerializer | type[Any] | None = None,
    key_prefix: str | None = None,
) -> Callable[[Callable[P, Coroutine[Any, Any, R]]], Callable[P, Coroutine[Any, Any, R]]]:
    """Make any async function idempotent on one of its arguments.

    ``data_keyword_argument`` names the argument whose value is the payload (it
    may be passed positionally or by keyword). The result is replayed typed by
    ``output_serializer``, inferred from the return annotation when not given.
    """

    def decorate(
        function: Callable[P, Coroutine[Any, Any, R]],
    ) -> Callable[P, Coroutine[Any, Any, R]]:
        _require_async(function, "idempotent_function")
        signature = inspect.signature(function)
        if data_keyword_argument not in signature.parameters:
            raise TypeError(
                f"{function.__qualname__} has no parameter {data_keyword_argument!r} "
                "(data_keyword_argument)"
            )
        engine = _engine(function, persistence_store, config, key_prefix, output_serializer)

        @functools.wraps(function)
        async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            bound = signature.bind_partial(*args, **kwargs)
            if data_keyword_argument not in bound.arguments:
                raise RuntimeError(
                    f"Unable to extract '{data_keyword_argument}' from the arguments of "
                    f"{function.__qualname__}"
                )
            payload = bound.arguments[data_keyword_argument]
            result: R = await engine.run(
                payload,
                lambda: function(*args, **kwargs),
                lambda_context=current_lambda_context(),
            )
            return result

        wrapper.idempotency_engine = engine  # type: ignore[attr-defined]  # introspection for tests
        return wrapper

    return decorate
