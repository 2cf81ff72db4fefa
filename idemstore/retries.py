"""The retry policy of the store's own clients: botocore's standard mode, fitted to our writes.

aiobotocore registers its standard retry handler on every client it builds; the
store replaces it, on the clients it opens, by one made of the same parts
(``aiobotocore.retries.standard``, async versions of ``botocore.retries.standard``)
with two changes:

- **A refused connection fails fast.** A refused connection or a host name that
  does not resolve means not a byte was sent and the endpoint is down: such attempts
  are capped at ``connect_attempts`` in all (the full ``max_attempts`` with growing
  backoff made a dead endpoint take twelve seconds to fail). A connect *timeout*
  sends nothing either, but it is what an overloaded endpoint's full listen queue
  looks like (its SYNs dropped, then retransmitted), where retrying is what helps:
  it keeps the standard retries (capping it failed 10,000 concurrent first calls on
  a loaded machine). When no attempt of a request got further than connecting, its
  final error is marked, so the store can say "nothing was written"
  (:func:`never_sent`). Everything that may have been applied (read timeouts,
  dropped answers, 5xx, throttling) keeps its retries.
- **A refused condition counts as a success for the retry quota.** The standard mode
  keeps one quota per client: each retry takes from it and only 2xx answers give
  back. Every duplicate's refused put and every fenced write that finds another
  owner is a ``ConditionalCheckFailedException`` (HTTP 400), so in a service whose
  traffic is mostly replays nothing refills the quota, and after a while throttles
  and 5xx reach callers with no retry at all. Such an answer is the server working
  as asked, and refills the quota as a success does.

Why a replacement: botocore takes no checker and no quota from outside, and the
quota it builds is held only by the handler it registers; rebuilding the handler
from the same public classes is the one supported way to own both. The hooks are
botocore's event names: ``needs-retry.dynamodb`` (replaced: botocore registers it
under the unique id ``retry-config-dynamodb``) and ``after-call.dynamodb``, where
the new quota is given back. botocore's own quota release stays registered there;
its quota is never drawn on once its handler is gone, so it returns at once. The
legacy retry mode has no quota and is left as botocore makes it; a client passed
to the store is never changed.
"""

from __future__ import annotations

import socket
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

import aiohttp
from aiobotocore.httpxsession import HttpxSession
from aiobotocore.retries import standard as aio_standard
from botocore.exceptions import ConnectTimeoutError, EndpointConnectionError
from botocore.retries import quota, standard

if TYPE_CHECKING:
    from types_aiobotocore_dynamodb import DynamoDBClient

DEFAULT_CONNECT_ATTEMPTS = 2
"""One quick retry of a failed connect (a blip, a restarting endpoint), then give up."""

REFUSAL_CODE = "ConditionalCheckFailedException"

_CONNECT_PHASE_ERRORS = (aiohttp.ClientConnectorError, socket.gaierror)
"""aiohttp's errors raised before a request is written: connecting, resolving, TLS setup."""

_NEVER_SENT = "idemstore_never_sent"
"""Set on botocore's final exception when no attempt of its request reached the server."""

_MAYBE_SENT = "idemstore.maybe_sent"
_CONNECT_FAILURES = "idemstore.connect_failures"
"""Keys in a request's context, a dict botocore shares between the request's attempts."""

_NO_RETRY_REFILL = 1
"""What botocore's quota gets back for a success that needed no retry."""


def connect_failed(error: BaseException | None) -> bool:
    """Whether an attempt failed before any of its request was sent."""
    if isinstance(error, ConnectTimeoutError):
        # aiobotocore raises it for aiohttp's connect timeouts only.
        return isinstance(error.kwargs.get("error"), aiohttp.ServerTimeoutError)
    if isinstance(error, EndpointConnectionError):
        # Also raised for a connection reset after the request went out: look at the cause.
        return isinstance(error.kwargs.get("error"), _CONNECT_PHASE_ERRORS)
    return False


def never_sent(error: BaseException) -> bool:
    """Whether no attempt of the failed request reached the server (only our clients know)."""
    return bool(getattr(error, _NEVER_SENT, False))


class _Conditions:
    """The standard conditions, with connect failures capped separately."""

    def __init__(self, max_attempts: int, connect_attempts: int) -> None:
        self._standard = aio_standard.AioStandardRetryConditions(max_attempts=max_attempts)
        self._connect_attempts = connect_attempts

    def is_retryable(self, context: standard.RetryContext) -> bool | Awaitable[bool]:
        # Not async: the standard check's own coroutine is handed back for the async
        # policy to await, so every request (successes too) costs no extra await.
        request: dict[str, Any] = context.request_context
        error = context.caught_exception
        if connect_failed(error):
            if not request.get(_MAYBE_SENT):
                setattr(error, _NEVER_SENT, True)
            if not isinstance(error, ConnectTimeoutError):  # refused or unresolved: down
                failures = request[_CONNECT_FAILURES] = request.get(_CONNECT_FAILURES, 0) + 1
                if failures >= self._connect_attempts:
                    return False
        else:
            request[_MAYBE_SENT] = True
        return self._standard.is_retryable(context)


class _RefusalRefill:
    """Gives a refused condition back to the quota, exactly as botocore does for a 2xx."""

    def __init__(self, retry_quota: quota.RetryQuota) -> None:
        self._quota = retry_quota

    def after_call(
        self, http_response: Any, parsed: dict[str, Any], context: dict[str, Any], **_: Any
    ) -> None:
        if http_response is None or http_response.status_code != 400:
            return  # every success and most errors leave here
        if parsed.get("Error", {}).get("Code") == REFUSAL_CODE:
            # After retries botocore gives back what the last retry took, recorded
            # under this key of the request context; otherwise one unit.
            self._quota.release(context.get("retry_quota_capacity", _NO_RETRY_REFILL))


def install_retry_policy(client: DynamoDBClient, *, connect_attempts: int) -> None:
    """Replace botocore's standard retry handler on ``client`` (see the module docstring)."""
    # The stubs of botocore's Config omit ``retries``, which it always sets.
    retries = client.meta.config.retries or {}  # type: ignore[attr-defined]
    if retries.get("mode") not in ("standard", "adaptive"):
        return
    max_attempts = int(retries.get("total_max_attempts") or standard.DEFAULT_MAX_ATTEMPTS)
    service = client.meta.service_model.service_id.hyphenize()
    events = client.meta.events
    events.unregister(f"needs-retry.{service}", unique_id=f"retry-config-{service}")

    adapter = standard.RetryEventAdapter()
    throttling = standard.ThrottlingErrorDetector(adapter)
    retry_quota = quota.RetryQuota()
    quota_checker = standard.RetryQuotaChecker(retry_quota, throttling)
    # aiobotocore picks the anyio flavour (trio-safe sleeps) for its httpx backend.
    # Both names are missing from the stubs, which lag aiobotocore 3.10.
    uses_httpx = issubclass(client.meta.config.http_session_cls, HttpxSession)  # type: ignore[attr-defined]
    handler_cls = (
        aio_standard.AnyioRetryHandler  # type: ignore[attr-defined]
        if uses_httpx
        else aio_standard.AioRetryHandler
    )
    handler = handler_cls(
        retry_policy=aio_standard.AioRetryPolicy(
            # The stubs want botocore's sync checker; the async policy awaits this one.
            retry_checker=_Conditions(max_attempts, connect_attempts),  # type: ignore[arg-type]
            retry_backoff=standard.ExponentialBackoff(
                service_name=service, throttling_detector=throttling
            ),
        ),
        retry_event_adapter=adapter,
        # The stubs say RetryQuota; botocore passes (and calls) a RetryQuotaChecker here.
        retry_quota=quota_checker,  # type: ignore[arg-type]
        service_name=service,
    )
    events.register(f"after-call.{service}", quota_checker.release_retry_quota)
    events.register(f"after-call.{service}", _RefusalRefill(retry_quota).after_call)
    events.register(
        f"needs-retry.{service}",
        # The stubs want handlers that return None; needs-retry handlers return the delay.
        handler.needs_retry,  # type: ignore[arg-type]
        unique_id=f"retry-config-{service}",
    )
