"""The idempotency engine: one state machine behind the decorators and HTTP middleware.

Per call::

    derive key + payload hash (pure)
      -> local cache hit?                                  replay, 0 requests
      -> same key already running here, waiting enabled?   attach, 0 requests
      -> conditional put of an INPROGRESS lock             1 request
           won:  run, then fenced completion               +1 request
                 (raises/cancelled: fenced release)        +1 request
           lost: decide on the returned record (decisions.decide)
                 replay / validation error / in progress (raise or wait) / retry

One engine serves one decorated function; it holds that function's local
cache and in-flight calls, and nothing about it is shared or global.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import uuid
import warnings
import zlib
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, NoReturn, TypeVar

import jmespath.exceptions
import pydantic

from idemstore.cache import LocalCache
from idemstore.config import IdempotencyConfig
from idemstore.decisions import Decision, decide
from idemstore.errors import (
    IdempotencyAlreadyInProgressError,
    IdempotencyCorruptRecordError,
    IdempotencyError,
    IdempotencyInconsistentStateError,
    IdempotencyItemAlreadyExistsError,
    IdempotencyItemNotFoundError,
    IdempotencyItemTooLargeError,
    IdempotencyKeyError,
    IdempotencyLeaseLostError,
    IdempotencyPersistenceLayerError,
    IdempotencyResponseTooLargeError,
    IdempotencySerializationError,
    IdempotencyStoreUnreachableError,
    IdempotencyTableNotFoundError,
    IdempotencyValidationError,
)
from idemstore.keys import PayloadEncoder, hash_data, is_missing_key, make_key, to_json_data
from idemstore.persistence import RecordStore
from idemstore.records import DataRecord, RecordStatus
from idemstore.serialization import BaseIdempotencySerializer, NoOpSerializer

logger = logging.getLogger("idemstore")
_T = TypeVar("_T")

DISABLED_ENV = "IDEMSTORE_DISABLED"
MAX_ACQUIRE_ATTEMPTS = 4
"""Acquires retried after finding an expired record or stale lock (races, clock skew)."""
MAX_ITEM_BYTES = 400 * 1024
RESULT_LIMIT_BYTES = MAX_ITEM_BYTES - 8 * 1024
"""Room for the stored result, leaving the rest of the item (key, hashes, numbers)."""
FIRST_POLL_SECONDS = 0.05
MAX_POLL_SECONDS = 1.0


class IdempotencyWarning(UserWarning):
    """A call ran without idempotency protection."""


@dataclass(frozen=True, slots=True)
class CallIdentity:
    """What a call is known by: its idempotency key and (with validation) payload hash."""

    key: str
    payload_hash: str | None


def disabled_by_environment() -> bool:
    return os.environ.get(DISABLED_ENV, "").strip().lower() in ("1", "true", "yes", "on")


class IdempotencyEngine:
    """Runs calls of one function at most once per idempotency key."""

    def __init__(
        self,
        store: RecordStore,
        config: IdempotencyConfig,
        *,
        key_prefix: str,
        serializer: BaseIdempotencySerializer | None = None,
    ) -> None:
        self.store = store
        self.config = config
        self.key_prefix = key_prefix
        self.serializer = serializer or NoOpSerializer()
        self._clock = config.clock
        self._lease_millis = int(config.in_progress_lease_seconds * 1000)
        # Read once: the config is frozen, and its private attributes are slow to reach.
        self._validating = config.payload_validation_enabled
        self._key_by_path = bool(config.event_key_jmespath)  # else the whole payload is the key
        self._cache = LocalCache(config.local_cache_max_items) if config.use_local_cache else None
        self._in_flight: dict[str, asyncio.Future[DataRecord | None]] = {}
        self._background: set[asyncio.Future[None]] = set()
        """Cleanups left running after a caller's cancellation."""

    # --- identity (pure) --------------------------------------------------------

    def identify(self, payload: Any) -> CallIdentity | None:
        """The call's key and payload hash, or None when the payload has no key."""
        config = self.config
        data = to_json_data(payload)
        try:
            key_data = config.extract_key_data(data) if self._key_by_path else data
            validation_data = config.extract_validation_data(data) if self._validating else None
        except (jmespath.exceptions.JMESPathError, ValueError) as exc:
            raise IdempotencyKeyError(f"cannot extract the idempotency key: {exc}") from exc
        if is_missing_key(key_data):
            if config.raise_on_no_idempotency_key:
                raise IdempotencyKeyError("No data found to create a hashed idempotency_key")
            warnings.warn(
                "No idempotency key value found. Skipping persistence layer and validation "
                f"operations. jmespath: {config.event_key_jmespath}",
                IdempotencyWarning,
                stacklevel=4,
            )
            return None
        try:
            key = make_key(self.key_prefix, key_data, config.hash_function)
            payload_hash = (
                hash_data(validation_data, config.hash_function) if self._validating else None
            )
        except (TypeError, ValueError) as exc:
            raise IdempotencyKeyError(f"the payload cannot be hashed: {exc}") from exc
        return CallIdentity(key, payload_hash)

    # --- the call -----------------------------------------------------------------

    async def run(
        self,
        payload: Any,
        call: Callable[[], Awaitable[Any]],
        *,
        lambda_context: Any = None,
    ) -> Any:
        """Run ``call`` once for the payload's key; duplicates get the stored result."""
        if disabled_by_environment():
            warnings.warn(
                f"{DISABLED_ENV} is set: running without idempotency", IdempotencyWarning, 2
            )
            return await call()
        identity = self.identify(payload)
        if identity is None:
            return await call()
        return await self.run_identified(identity, call, lambda_context=lambda_context)

    async def run_identified(
        self,
        identity: CallIdentity,
        call: Callable[[], Awaitable[Any]],
        *,
        lambda_context: Any = None,
    ) -> Any:
        """Run ``call`` once for an already derived identity (the HTTP layer derives its own)."""
        # One deadline for the whole call: time spent attached counts against it.
        wait_deadline = self._clock() + self.config.wait_for_in_progress_seconds
        if self._cache is not None:
            cached = self._cache.get(identity.key, now=self._clock())
            if cached is not None:
                return self.replay(self._validated(cached, identity))
        if self.config.wait_for_in_progress_seconds <= 0:
            result, _ = await self._acquire(identity, call, lambda_context, wait_deadline)
            return result
        attached = await self._attach(identity.key)
        if attached is not None:
            return self.replay(self._validated(attached, identity))
        # This call leads for its key in this process: later duplicates attach to it.
        future: asyncio.Future[DataRecord | None] = asyncio.get_running_loop().create_future()
        self._in_flight[identity.key] = future
        completed: DataRecord | None = None
        try:
            result, completed = await self._acquire(identity, call, lambda_context, wait_deadline)
            return result
        finally:
            if self._in_flight.get(identity.key) is future:
                del self._in_flight[identity.key]
            future.set_result(completed)

    async def _acquire(
        self,
        identity: CallIdentity,
        call: Callable[[], Awaitable[Any]],
        lambda_context: Any,
        wait_deadline: float,
    ) -> tuple[Any, DataRecord]:
        """Take the lock and run, or replay what is stored: the result and its record."""
        deadline_ms = _remaining_millis(lambda_context)
        lock_ms = deadline_ms if deadline_ms is not None else self._lease_millis
        for _ in range(MAX_ACQUIRE_ATTEMPTS):
            lock = self._new_lock(identity, lock_ms)
            try:
                await self._put_lock(lock)
            except IdempotencyItemAlreadyExistsError as exc:
                found = exc.old_data_record or await self._fetch(identity.key)
                # Our own token in the fallback read: a retried put whose first attempt
                # was applied, on a server that returned no old item. The lock is ours.
                if found is None or not found.owned_by(lock.owner_token):
                    completed = await self._resolve(found, identity, wait_deadline)
                    if completed is not None:
                        return self.replay(completed), completed
                    continue
            except _NOTHING_WRITTEN:
                raise
            except IdempotencyPersistenceLayerError:
                await self._drop_uncertain_lock(lock)
                raise
            return await self._execute(lock, call, heartbeat=deadline_ms is None)
        raise IdempotencyInconsistentStateError(
            f"the record for {identity.key!r} kept changing; gave up after "
            f"{MAX_ACQUIRE_ATTEMPTS} attempts"
        )

    def replay(self, record: DataRecord) -> Any:
        """The stored result, typed by the output serializer, through the response hook."""
        try:
            data = json.loads(record.response_data) if record.response_data else None
            response = self.serializer.from_dict(data)
        except (ValueError, TypeError, pydantic.ValidationError) as exc:
            raise IdempotencySerializationError(
                f"stored result of {record.idempotency_key!r} cannot be read back: {exc}"
            ) from exc
        if self.config.response_hook is not None:
            response = self.config.response_hook(response, record)
        return response

    # --- steps ----------------------------------------------------------------------

    def _new_lock(self, identity: CallIdentity, lock_ms: int) -> DataRecord:
        now = self._clock()
        return DataRecord(
            idempotency_key=identity.key,
            status=RecordStatus.INPROGRESS,
            expiry_timestamp=int(now) + self.config.expires_after_seconds,
            in_progress_expiry_timestamp=int(now * 1000) + lock_ms,
            payload_hash=identity.payload_hash,
            owner_token=uuid.uuid4().hex,
        )

    async def _fetch(self, key: str) -> DataRecord | None:
        """The one consistent read, for servers that return no old item on conflict."""
        try:
            return await self.store.get_record(key)
        except IdempotencyItemNotFoundError:
            return None

    def _validated(self, record: DataRecord, identity: CallIdentity) -> DataRecord:
        if identity.payload_hash is not None and record.payload_hash != identity.payload_hash:
            raise IdempotencyValidationError(
                "Payload does not match stored record for this event key",
                idempotency_key=identity.key,
            )
        return record

    async def _resolve(
        self, found: DataRecord | None, identity: CallIdentity, wait_deadline: float
    ) -> DataRecord | None:
        """A completed record to replay, or None to retry the acquire; raises otherwise."""
        delay = FIRST_POLL_SECONDS
        max_polls = math.ceil(self.config.wait_for_in_progress_seconds / FIRST_POLL_SECONDS) + 1
        for _ in range(max_polls + 1):
            if found is None:
                return None
            decision = decide(found, now=self._clock(), payload_hash=identity.payload_hash)
            if decision is Decision.RETRY_ACQUIRE:
                return None
            if decision is Decision.PAYLOAD_MISMATCH:
                self._validated(found, identity)  # raises
            if decision is Decision.REPLAY:
                if self._cache is not None:
                    self._cache.put(found)
                return found
            remaining = wait_deadline - self._clock()
            if remaining <= 0:
                break
            await asyncio.sleep(min(delay, remaining))
            delay = min(delay * 2, MAX_POLL_SECONDS)
            found = await self._fetch(identity.key)
        raise IdempotencyAlreadyInProgressError(
            f"Execution already in progress with idempotency key: {identity.key}",
            old_data_record=found,
        )

    async def _attach(self, key: str) -> DataRecord | None:
        """Wait for the same key's call already running in this process, if any.

        None when there is none, it failed, or it outlasted the wait: then this
        call goes to the store itself.
        """
        future = self._in_flight.get(key)
        if future is None or future.get_loop() is not asyncio.get_running_loop():
            return None
        timeout = self.config.wait_for_in_progress_seconds
        with contextlib.suppress(TimeoutError):
            return await asyncio.wait_for(asyncio.shield(future), timeout)
        return None

    async def _execute(
        self, lock: DataRecord, call: Callable[[], Awaitable[Any]], *, heartbeat: bool
    ) -> tuple[Any, DataRecord]:
        result = await self._call_with_heartbeat(lock, call, heartbeat)
        # The function has run: record its result even if the caller is cancelled meanwhile,
        # rather than leave the lock to block duplicates until it lapses.
        return result, await _shielded(self._complete(lock, result))[1]

    async def _call_with_heartbeat(
        self, lock: DataRecord, call: Callable[[], Awaitable[Any]], heartbeat: bool
    ) -> Any:
        lease = self.config.in_progress_lease_seconds
        renewer = _Heartbeat(lambda: self._heartbeat(lock), lease / 3) if heartbeat else None
        try:
            result = await call()
        except BaseException as exc:  # cancellation must release the lock too
            if renewer is not None:
                await renewer.stop()
            await self._release(lock, exc)
            raise
        if renewer is not None:
            await renewer.stop()
        return result

    async def _heartbeat(self, lock: DataRecord) -> None:
        """Keep the lease alive while the function runs: renew now, then every third of it."""
        lease = self.config.in_progress_lease_seconds
        while True:
            expiry_ms = int((self._clock() + lease) * 1000)
            try:
                await self.store.renew_lease(lock, in_progress_expiry_timestamp=expiry_ms)
            except IdempotencyLeaseLostError:
                logger.warning("lease on %s was taken over; stopping renewal", lock.idempotency_key)
                return
            except IdempotencyPersistenceLayerError:
                logger.warning("renewing the lease on %s failed; retrying", lock.idempotency_key)
            await asyncio.sleep(lease / 3)

    async def _release(self, lock: DataRecord, cause: BaseException) -> DataRecord | None:
        """Release the lock after the call failed; shielded from cancellation.

        Returns the record found instead when the lock was no longer ours to release.
        """
        try:
            await _shielded(self.store.delete_record(lock))[1]
        except IdempotencyLeaseLostError as lost:
            return lost.current_record  # no longer an INPROGRESS lock of ours
        except IdempotencyError as release_error:
            if not isinstance(cause, Exception):
                logger.error("releasing %s failed: %s", lock.idempotency_key, release_error)
                return None  # let the cancellation propagate; the lease will lapse
            raise IdempotencyPersistenceLayerError(
                f"Failed to delete record {lock.idempotency_key!r} from idempotency store "
                f"after the function raised {type(cause).__name__}: {release_error}",
                function_error=cause,
            ) from release_error
        return None

    async def _put_lock(self, lock: DataRecord) -> None:
        """The lock's conditional put, shielded from the caller's cancellation.

        A caller cancelled while the put is on the wire cannot know whether it
        took the lock: the put settles in the background, and a lock it took is
        released there, instead of blocking duplicates until its lease lapses.
        """
        put, settled = _shielded(self.store.put_record(lock, now=self._clock()))
        try:
            await settled
        except asyncio.CancelledError:
            undo = asyncio.ensure_future(self._undo_abandoned_put(put, lock))
            self._background.add(undo)  # a strong reference until it is done
            undo.add_done_callback(self._background.discard)
            undo.add_done_callback(_consume_exception)
            raise
        except BaseException:
            # The task holds the error, whose traceback holds this frame and so the task:
            # a cycle only the garbage collector would free, on every duplicate call.
            del put, settled
            raise

    async def _undo_abandoned_put(self, put: asyncio.Future[None], lock: DataRecord) -> None:
        try:
            await put
        except (IdempotencyItemAlreadyExistsError, *_NOTHING_WRITTEN):
            return  # the lock was not taken
        except IdempotencyError:
            pass  # unknown whether it was: the fenced release deletes only our own write
        await self._drop_uncertain_lock(lock)

    async def _drop_uncertain_lock(self, lock: DataRecord) -> None:
        """Release a lock whose put failed without an answer: an attempt may have been applied.

        Fenced on the lock's own token, so it deletes nothing but our write; best
        effort, since the lease bounds the lock anyway.
        """
        try:
            await self.store.delete_record(lock)
        except IdempotencyError as exc:
            logger.warning(
                "releasing the uncertain lock on %s failed: %s", lock.idempotency_key, exc
            )

    async def _abandon(self, lock: DataRecord, error: IdempotencyError) -> NoReturn:
        """Release the lock because the result cannot be stored, and say why."""
        await self._release(lock, error)
        raise error

    def _serialize(self, result: Any) -> str:
        data = self.serializer.to_dict(result)
        return json.dumps(data, cls=PayloadEncoder, sort_keys=True)

    async def _complete(self, lock: DataRecord, result: Any) -> DataRecord:
        key = lock.idempotency_key
        try:
            response_data = self._serialize(result)
        except (TypeError, ValueError) as exc:
            unstorable = IdempotencySerializationError(
                f"the result of {key!r} cannot be stored as JSON: {exc}"
            )
            unstorable.__cause__ = exc
            await self._abandon(lock, unstorable)
        too_large = _size_error(key, response_data)
        if too_large is not None:
            await self._abandon(lock, too_large)
        completed = lock.model_copy(
            update={
                "status": RecordStatus.COMPLETED,
                "response_data": response_data,
                "expiry_timestamp": int(self._clock()) + self.config.expires_after_seconds,
            }
        )
        try:
            await self.store.update_record(completed)
        except IdempotencyLeaseLostError as exc:
            exc.result = result
            raise
        except IdempotencyPersistenceLayerError as exc:
            holder = await self._release(lock, exc)
            if (
                holder is None
                or not holder.owned_by(lock.owner_token)
                or holder.status is not RecordStatus.COMPLETED
            ):
                raise
            # An attempt of the completion was applied; only its answers were lost.
            completed = holder
        if self._cache is not None:
            self._cache.put(completed)
        return completed


_NOTHING_WRITTEN = (
    IdempotencyStoreUnreachableError,
    IdempotencyTableNotFoundError,
    IdempotencyItemTooLargeError,
    IdempotencyCorruptRecordError,
)
"""Store errors that prove a conditional put was not applied: no lock to release."""


def _remaining_millis(lambda_context: Any) -> int | None:
    """Time left in the Lambda invocation; None outside Lambda (the lease applies)."""
    remaining = getattr(lambda_context, "get_remaining_time_in_millis", None)
    return int(remaining()) if callable(remaining) else None


def _size_error(key: str, response_data: str) -> IdempotencyResponseTooLargeError | None:
    """An error when the result cannot fit in an item, even compressed."""
    encoded = response_data.encode()
    if len(encoded) <= RESULT_LIMIT_BYTES:
        return None
    compressed = len(zlib.compress(encoded, 6))
    if compressed <= RESULT_LIMIT_BYTES:
        return None
    return IdempotencyResponseTooLargeError(
        f"the result of {key!r} is {len(encoded)} bytes, {compressed} compressed; "
        f"an item holds at most {RESULT_LIMIT_BYTES} bytes of result",
        size_bytes=compressed,
        limit_bytes=RESULT_LIMIT_BYTES,
    )


def _shielded(work: Coroutine[Any, Any, _T]) -> tuple[asyncio.Task[_T], asyncio.Future[_T]]:
    """Run ``work`` in a task of its own; return it and a future to await its outcome.

    Cancelling that future (as the awaiting caller's cancellation does) leaves the
    work running: ``asyncio.shield``, with the outcome handed over as the work ends
    instead of by done callbacks, which cost the caller an extra loop iteration.
    """
    loop = asyncio.get_running_loop()
    outcome: asyncio.Future[_T] = loop.create_future()
    task = loop.create_task(_relay(work, outcome))
    task.add_done_callback(_consume_exception)
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


class _Heartbeat:
    """Runs ``renew`` once its first renewal is due, until stopped.

    Most calls end before then: until it is due, it is a timer, not a task.
    """

    def __init__(self, renew: Callable[[], Coroutine[Any, Any, None]], due_in: float) -> None:
        self._renew = renew
        self._task: asyncio.Task[None] | None = None
        self._timer = asyncio.get_running_loop().call_later(due_in, self._start)

    def _start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._renew())

    async def stop(self) -> None:
        self._timer.cancel()
        await _stop(self._task)


async def _stop(task: asyncio.Task[None] | None) -> None:
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def _consume_exception(task: asyncio.Future[Any]) -> None:
    # A release or completion left running after a cancellation must not warn as unretrieved.
    if not task.cancelled():
        task.exception()
