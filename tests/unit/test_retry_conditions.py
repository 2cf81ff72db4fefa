"""Which failed attempts the store's retry policy caps, and which keep the standard retries."""

from __future__ import annotations

import asyncio
import inspect
from typing import Any

import aiohttp
import pytest
from aiohttp.client_reqrep import ConnectionKey
from botocore.exceptions import ConnectTimeoutError, EndpointConnectionError
from botocore.retries.standard import RetryContext

from idemstore.retries import _Conditions, never_sent

URL = "http://127.0.0.1:9/"


def refused() -> EndpointConnectionError:
    key = ConnectionKey("127.0.0.1", 9, False, True, None, None, None)
    cause = aiohttp.ClientConnectorError(key, ConnectionRefusedError(111, "refused"))
    return EndpointConnectionError(endpoint_url=URL, error=cause)


def timed_out() -> ConnectTimeoutError:
    return ConnectTimeoutError(endpoint_url=URL, error=aiohttp.ServerTimeoutError("connect"))


async def retryable(conditions: _Conditions, error: Exception, attempt: int, request: Any) -> bool:
    context = RetryContext(attempt_number=attempt, caught_exception=error, request_context=request)
    answer = conditions.is_retryable(context)
    return bool(await answer) if inspect.isawaitable(answer) else bool(answer)


@pytest.mark.parametrize(
    ("make_error", "retried_attempts"),
    [(refused, 1), (timed_out, 4)],
    ids=["refused-capped-at-connect-attempts", "timeout-keeps-standard-retries"],
)
def test_connect_failures_are_never_sent_and_only_refusals_are_capped(
    make_error: Any, retried_attempts: int
) -> None:
    conditions = _Conditions(max_attempts=5, connect_attempts=2)
    request: dict[str, Any] = {}
    answers = []
    errors = []
    for attempt in range(1, 6):
        error = make_error()
        errors.append(error)
        answers.append(asyncio.run(retryable(conditions, error, attempt, request)))
    assert answers.count(True) == retried_attempts
    assert answers[retried_attempts:] == [False] * (5 - retried_attempts)
    assert all(never_sent(error) for error in errors)
