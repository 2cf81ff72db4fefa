"""The idempotency engine: one state machine behind every integration.

Per call::

    derive key + payload hash (identity: decorators, HTTP and batch alike)
      -> kill switch set?                                  run unprotected
      -> local cache hit?                                  replay, 0 requests
      -> same key already running here, waiting enabled?   attach, 0 requests
      -> conditional put of an INPROGRESS lock             1 request
           won:  run, then fenced completion               +1 request
                 (raises/cancelled/Unstored: fenced release)  +1 request
           lost: decide on the returned record (decisions.decide)
                 replay / validation error / in progress (raise or wait) / retry

Every call ends in an ``Outcome`` (idemstore.outcome) saying how its value was
obtained. One engine serves one decorated function or one middleware; it holds
that function's local cache and in-flight calls, and nothing about it is
shared or global.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import math
import os
import uuid
import warnings
from collections.abc import Awaitable, Callable
from typing import Any

from idemstore.cache import LocalCache
from idemstore.codec import result_size_error
from idemstore.config import IdempotencyConfig
from idemstore.decisions import Decision, decide, payload_mismatch
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
    IdempotencySerializationError,
    IdempotencyStoreUnreachableError,
    IdempotencyTableNotFoundError,
    IdempotencyValidationError,
)
from idemstore.keys import PayloadEncoder, hash_data, is_missing_key, make_key, to_json_data
from idemstore.outcome import CallIdentity, Outcome, OutcomeKind, Unstored
from idemstore.records import DataRecord, RecordStatus
from idemstore.serialization import BaseIdempotencySerializer, NoOpSerializer
from idemstore.speedups import Heartbeat, consume_exception, shielded
from idemstore.stores.contract import RecordStore, is_own_completion

__all__ = [
    "DISABLED_ENV",
    "CallIdentity",
    "IdempotencyEngine",
    "IdempotencyWarning",
    "UnstorablePolicy",
    "disabled_by_environment",
]

logger = logging.getLogger("idemstore")

DISABLED_ENV = "IDEMSTORE_DISABLED"
MAX_ACQUIRE_ATTEMPTS = 4
"""Acquires retried after finding an expired record or stale lock (races, clock skew)."""
FIRST_POLL_SECONDS = 0.05
MAX_POLL_SECONDS = 1.0

Call = Callable[[], Awaitable[Any]]
"""The function's call; it may return ``Unstored`` to keep its result out of the store."""

UnstorablePolicy = Callable[[Any, IdempotencyError], "Unstored[Any] | None"]
"""Called with a result that cannot be stored (too large, not JSON) and why: an
``Unstored`` to record in its place, or None to release the lock and raise."""


class IdempotencyWarning(UserWarning):
    """A call ran without idempotency protection."""


def disabled_by_environment() -> bool:
    return os.environ.get(DISABLED_ENV, "").strip().lower() in ("1", "true", "yes", "on")


class _DisabledNotice:
    """Warns once per process that the kill switch is on, whichever integration meets it first.

    Process-wide on purpose: the switch is a process's environment. ``reset``
    exists for tests that switch it on and off.
    """

    def __init__(self) -> None:
        self.given = False

    def warn(self) -> None:
        if self.given:
            return
        self.given = True
        warnings.warn(
            f"{DISABLED_ENV} is set: idempotent calls run without idempotency",
            IdempotencyWarning,
            stacklevel=4,
        )

    def reset(self) -> None:
        self.given = False


DISABLED_NOTICE = _DisabledNotice()


class IdempotencyEngine:
    """Runs calls of one function at most once per idempotency key."""

    def __init__(
        self,
        store: RecordStore,
        config: IdempotencyConfig,
        *,
        key_prefix: str,
        serializer: BaseIdempotencySerializer | None = None,
        unstorable: UnstorablePolicy | None = None,
    ) -> None:
        self.store = store
        self.config = config
        self.key_prefix = key_prefix
        self.serializer = serializer or NoOpSerializer()
        self._unstorable = unstorable
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
        """A payload's key and hash, by the config's JMESPaths; None when it has no key."""
        config = self.config
        data = to_json_data(payload)
        try:
            key_data = config.extract_key_data(data) if self._key_by_path else data
            validation_data = config.extract_validation_data(data) if self._validating else None
        except ValueError as exc:  # JMESPath errors are ValueErrors too
            raise IdempotencyKeyError(f"cannot extract the idempotency key: {exc}") from exc
        return self.identity_of(key_data, validation_data)

    def identity_of(self, key_data: Any, validation_data: Any = None) -> CallIdentity | None:
        """The identity of explicit key data and (when given) the data its payload hash covers.

        For integrations whose key is not in a payload (the HTTP header and
        request fingerprint); None when the key data is empty.
        """
        config = self.config
        if is_missing_key(key_data):
            if config.raise_on_no_idempotency_key:
                raise IdempotencyKeyError("No data found to create a hashed idempotency_key")
            warnings.warn(
                "No idempotency key value found. Skipping persistence layer and validation "
                f"operations. jmespath: {config.event_key_jmespath}",
                IdempotencyWarning,
                stacklevel=5,
            )
            return None
        try:
            key = make_key(self.key_prefix, key_data, config.hash_function)
            payload_hash = (
                hash_data(validation_data, config.hash_function)
                if validation_data is not None
                else None
            )
        except (TypeError, ValueError) as exc:
            raise IdempotencyKeyError(f"the payload cannot be hashed: {exc}") from exc
        return CallIdentity(key, payload_hash)

    # --- the call -----------------------------------------------------------------

    async def process(
        self, payload: Any, call: Call, *, lambda_context: Any = None
    ) -> Outcome[Any]:
        """Run ``call`` once for the payload's key; duplicates get the stored result."""
        if disabled_by_environment():
            return await self._unprotected(OutcomeKind.DISABLED, call)
        identity = self.identify(payload)
        return await self.execute(identity, call, lambda_context=lambda_context)

    async def process_keyed(
        self, key_data: Any, validation_data: Any, call: Call, *, lambda_context: Any = None
    ) -> Outcome[Any]:
        """``process`` for integrations that name the key data themselves (see ``identity_of``)."""
        if disabled_by_environment():
            return await self._unprotected(OutcomeKind.DISABLED, call)
        identity = self.identity_of(key_data, validation_data)
        return await self.execute(identity, call, lambda_context=lambda_context)

    async def run(self, payload: Any, call: Call, *, lambda_context: Any = None) -> Any:
        """``process``, giving only the value: what a decorated function returns."""
        outcome = await self.process(payload, call, lambda_context=lambda_context)
        return outcome.value

    async def execute(
        self, identity: CallIdentity | None, call: Call, *, lambda_context: Any = None
    ) -> Outcome[Any]:
        """Run ``call`` once for an identity; None runs it unprotected."""
        if identity is None:
            return await self._unprotected(OutcomeKind.UNPROTECTED, call)
        # One deadline for the whole call: time spent attached counts against it.
        wait_deadline = self._clock() + self.config.wait_for_in_progress_seconds
        if self._cache is not None:
            cached = self._cache.get(identity.key, now=self._clock())
            if cached is not None:
                return self._replayed(OutcomeKind.CACHED, cached, identity)
        if self.config.wait_for_in_progress_seconds <= 0:
            return await self._acquire(identity, call, lambda_context, wait_deadline)
        attached = await self._attach(identity.key)
        if attached is not None:
            return self._replayed(OutcomeKind.ATTACHED, attached, identity)
        # This call leads for its key in this process: later duplicates attach to it.
        future: asyncio.Future[DataRecord | None] = asyncio.get_running_loop().create_future()
        self._in_flight[identity.key] = future
        completed: DataRecord | None = None
        try:
            outcome = await self._acquire(identity, call, lambda_context, wait_deadline)
            completed = outcome.record
            return outcome
        finally:
            if self._in_flight.get(identity.key) is future:
                del self._in_flight[identity.key]
            future.set_result(completed)

    def settle_found(
        self,
        identity: CallIdentity,
        record: DataRecord,
        *,
        kind: OutcomeKind = OutcomeKind.REPLAYED,
    ) -> Outcome[Any] | None:
        """The outcome a record read beforehand settles without any write.

        For callers that read many records at once (a redelivered batch): a
        replay when the record is completed, unexpired and made for this
        payload; None when the usual path must decide (an in-progress lock, an
        expired record). A payload mismatch raises ``IdempotencyValidationError``.
        """
        decision = decide(record, now=self._clock(), payload_hash=identity.payload_hash)
        if decision is Decision.PAYLOAD_MISMATCH:
            self._validated(record, identity)  # raises
        if decision is not Decision.REPLAY:
            return None
        if self._cache is not None:
            self._cache.put(record)
        return self._replayed(kind, record, identity)

    def replay(self, record: DataRecord) -> Any:
        """The stored result, typed by the output serializer, through the response hook."""
        try:
            data = json.loads(record.response_data) if record.response_data else None
            response = self.serializer.from_dict(data)
        except (ValueError, TypeError) as exc:  # pydantic's ValidationError is a ValueError
            raise IdempotencySerializationError(
                f"stored result of {record.idempotency_key!r} cannot be read back: {exc}"
            ) from exc
        if self.config.response_hook is not None:
            response = self.config.response_hook(response, record)
        return response

    # --- steps ----------------------------------------------------------------------

    async def _unprotected(self, kind: OutcomeKind, call: Call) -> Outcome[Any]:
        if kind is OutcomeKind.DISABLED:
            DISABLED_NOTICE.warn()
        result = await call()
        if isinstance(result, Unstored):
            return Outcome(kind, result.value, unstored_reason=result.reason)
        return Outcome(kind, result)

    def _replayed(
        self, kind: OutcomeKind, record: DataRecord, identity: CallIdentity
    ) -> Outcome[Any]:
        self._validated(record, identity)
        return Outcome(kind, self.replay(record), identity, record)

    async def _acquire(
        self, identity: CallIdentity, call: Call, lambda_context: Any, wait_deadline: float
    ) -> Outcome[Any]:
        """Take the lock and run, or replay what is stored."""
        deadline_ms = _remaining_millis(lambda_context)
        lock_ms = deadline_ms if deadline_ms is not None else self._lease_millis
        for _ in range(MAX_ACQUIRE_ATTEMPTS):
            lock = self._new_lock(identity, lock_ms)
            try:
                await self._put_lock(lock)
            except IdempotencyItemAlreadyExistsError as exc:
                completed = await self._resolve(exc.old_data_record, identity, wait_deadline)
                if completed is not None:
                    return self._replayed(OutcomeKind.REPLAYED, completed, identity)
                continue
            except _NOTHING_WRITTEN:
                raise
            except IdempotencyPersistenceLayerError:
                await self._release_best_effort(lock)
                raise
            return await self._execute(lock, identity, call, heartbeat=deadline_ms is None)
        raise IdempotencyInconsistentStateError(
            f"the record for {identity.key!r} kept changing; gave up after "
            f"{MAX_ACQUIRE_ATTEMPTS} attempts"
        )

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
        try:
            return await self.store.get_record(key)
        except IdempotencyItemNotFoundError:
            return None

    def _validated(self, record: DataRecord, identity: CallIdentity) -> DataRecord:
        if payload_mismatch(record, identity.payload_hash):
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
        self, lock: DataRecord, identity: CallIdentity, call: Call, *, heartbeat: bool
    ) -> Outcome[Any]:
        result = await self._call_with_heartbeat(lock, call, heartbeat)
        # The function has run: record its result even if the caller is cancelled meanwhile,
        # rather than leave the lock to block duplicates until it lapses.
        return await shielded(self._finish(lock, identity, result))[1]

    async def _call_with_heartbeat(self, lock: DataRecord, call: Call, heartbeat: bool) -> Any:
        lease = self.config.in_progress_lease_seconds
        renewer = Heartbeat(lambda: self._heartbeat(lock), lease / 3) if heartbeat else None
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

    async def _finish(self, lock: DataRecord, identity: CallIdentity, result: Any) -> Outcome[Any]:
        """Record what the call returned, or release the lock; the call's outcome.

        An error raised from here says the function ran, and carries its value.
        """
        try:
            return await self._record(lock, identity, result)
        except IdempotencyError as error:
            error.function_ran = True
            error.result = result.value if isinstance(result, Unstored) else result
            raise

    async def _record(self, lock: DataRecord, identity: CallIdentity, result: Any) -> Outcome[Any]:
        if not isinstance(result, Unstored):
            unstorable, response_data = self._storable(lock, result)
            if unstorable is None:
                record = await self._complete(lock, response_data)
                return Outcome(OutcomeKind.EXECUTED, result, identity, record, stored=True)
            result = self._unstorable(result, unstorable) if self._unstorable else None
            if result is None:
                await self._release(lock, unstorable)
                raise unstorable
        if result.releases:
            await self._release_best_effort(lock)
            return Outcome(
                OutcomeKind.EXECUTED, result.value, identity, unstored_reason=result.reason
            )
        unstorable, response_data = self._storable(lock, result.record_as, serialize=False)
        if unstorable is not None:
            await self._release(lock, unstorable)
            raise unstorable
        record = await self._complete(lock, response_data)
        return Outcome(
            OutcomeKind.EXECUTED, result.value, identity, record, unstored_reason=result.reason
        )

    def _storable(
        self, lock: DataRecord, result: Any, *, serialize: bool = True
    ) -> tuple[IdempotencyError | None, str]:
        """The result (through the output serializer, unless it is stored JSON data
        already) as stored JSON text, or why it cannot be stored."""
        key = lock.idempotency_key
        try:
            data = self.serializer.to_dict(result) if serialize else result
            response_data = json.dumps(data, cls=PayloadEncoder, sort_keys=True)
        except (TypeError, ValueError) as exc:
            error = IdempotencySerializationError(
                f"the result of {key!r} cannot be stored as JSON: {exc}"
            )
            error.__cause__ = exc
            return error, ""
        return result_size_error(self.store.schema, key, response_data), response_data

    async def _release(self, lock: DataRecord, cause: BaseException) -> DataRecord | None:
        """Release the lock after the call failed; shielded from cancellation.

        Returns the record found instead when the lock was no longer ours to release.
        """
        try:
            await shielded(self.store.delete_record(lock))[1]
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

    async def _release_best_effort(self, lock: DataRecord) -> None:
        """Release a lock when nothing waits on the answer: a put that failed without one
        (an attempt may have been applied), or a result the caller chose not to store.

        Fenced on the lock's own token, so it deletes nothing but our write; a
        failure is logged, since the lease bounds the lock anyway.
        """
        try:
            await shielded(self.store.delete_record(lock))[1]
        except IdempotencyLeaseLostError:
            return  # not ours any more: nothing of ours to release
        except IdempotencyError as exc:
            logger.warning("releasing the lock on %s failed: %s", lock.idempotency_key, exc)

    async def _put_lock(self, lock: DataRecord) -> None:
        """The lock's conditional put, shielded from the caller's cancellation.

        A caller cancelled while the put is on the wire cannot know whether it
        took the lock: the put settles in the background, and a lock it took is
        released there, instead of blocking duplicates until its lease lapses.
        """
        put, settled = shielded(self.store.put_record(lock, now=self._clock()))
        try:
            await settled
        except asyncio.CancelledError:
            undo = asyncio.ensure_future(self._undo_abandoned_put(put, lock))
            self._background.add(undo)  # a strong reference until it is done
            undo.add_done_callback(self._background.discard)
            undo.add_done_callback(consume_exception)
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
        await self._release_best_effort(lock)

    async def _complete(self, lock: DataRecord, response_data: str) -> DataRecord:
        completed = dataclasses.replace(
            lock,
            status=RecordStatus.COMPLETED,
            response_data=response_data,
            expiry_timestamp=int(self._clock()) + self.config.expires_after_seconds,
        )
        try:
            await self.store.update_record(completed)
        except IdempotencyPersistenceLayerError as exc:
            holder = await self._release(lock, exc)
            if not is_own_completion(holder, lock):
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
