"""Measured speed-ups of the hot path: the engine's here, and an index of the rest.

Each exists because a measurement showed its plain form costing client CPU on
every call (``python -m benchmarks``, client CPU per call against raw
aiobotocore). The plain form is named beside each, so it can be restored when
the measurement no longer holds.

Here: ``shielded`` (instead of ``asyncio.shield``) and ``Heartbeat`` (a timer
until the first renewal is due, instead of a task per call).

Elsewhere, because each is a property of the data it speeds up, not a separate step:

- ``lock_rules.PreparedRequests``: the lock's put and the completion compiled once
  per schema and bound per call (a fifth of idemstore's own CPU per call), kept
  on the schema (a slot of the frozen dataclass, read directly);
- ``stores.dynamo.DEFAULT_CLIENT_CONFIG``: the User-Agent built once (botocore
  rebuilds it twice per request: about a tenth of a request's CPU) and parameter
  validation off for the store's known-good requests (about 5%);
- ``codec._number``: integer text read with ``int()`` before ``Decimal``;
- ``codec._surely_fits``: a small result is kept as text on a bound from string
  lengths (the schema's part computed once, kept on the schema) instead of sizing
  the whole item: 1.2 us instead of 1.9 us per completion;
- ``serialization.TypeAdapterSerializer``: the adapter's core serializer and
  validator called directly instead of ``dump_python``/``validate_python`` (a
  small model dumps in 3.0 us instead of 5.0 us).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

_T = TypeVar("_T")


def shielded(work: Coroutine[Any, Any, _T]) -> tuple[asyncio.Task[_T], asyncio.Future[_T]]:
    """Run ``work`` in a task of its own; return it and a future to await its outcome.

    Plain form: ``asyncio.shield(task)``. Cancelling the returned future (as the
    awaiting caller's cancellation does) leaves the work running, as with
    ``shield``; but the outcome is handed over as the work ends instead of by
    done callbacks, which wake the caller one loop iteration later: about 3% of
    a duplicate call's client CPU.
    """
    loop = asyncio.get_running_loop()
    outcome: asyncio.Future[_T] = loop.create_future()
    task = loop.create_task(_relay(work, outcome))
    task.add_done_callback(consume_exception)
    return task, outcome


async def _relay(work: Coroutine[Any, Any, _T], outcome: asyncio.Future[_T]) -> _T:
    try:
        result = await work
    except asyncio.CancelledError:
        outcome.cancel()
        raise
    except BaseException as exc:
        if not outcome.done():
            outcome.set_exception(exc)
        del outcome  # the error's traceback holds this frame: no cycle through the future
        raise
    if not outcome.done():
        outcome.set_result(result)
    return result


def consume_exception(task: asyncio.Future[Any]) -> None:
    # A release or completion left running after a cancellation must not warn as unretrieved.
    if not task.cancelled():
        task.exception()


class Heartbeat:
    """Runs ``renew`` once its first renewal is due, until stopped.

    Plain form: a task started with the call. Most calls end before a third of
    their lease, so until the renewal is due this is a timer handle, not a task
    created, cancelled and awaited: less client CPU per fresh call and less
    memory per call in flight.
    """

    def __init__(self, renew: Callable[[], Coroutine[Any, Any, None]], due_in: float) -> None:
        self._renew = renew
        self._task: asyncio.Task[None] | None = None
        self._timer = asyncio.get_running_loop().call_later(due_in, self._start)

    def _start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._renew())

    async def stop(self) -> None:
        self._timer.cancel()
        task = self._task
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
