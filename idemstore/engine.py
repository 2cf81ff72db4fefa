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
obtained. When observers are installed (idemstore.observe) or DEBUG logging is
on, each call is also reported with its decision and facts; otherwise that
costs one check per call. One engine serves one decorated function or one
middleware; it holds that function's local cache and in-flight calls, and
nothing about it is shared or global.
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
import zlib
from collections.abc import Awaitable, Callable
from typing import Any

from idemstore.cache import LocalCache
from idemstore.codec import result_size_error, to_item
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
    IdempotencyTransactionCanceledError,
    IdempotencyTransactionLimitError,
    IdempotencyValidationError,
)
from idemstore.keys import PayloadEncoder, hash_data, is_missing_key, make_key, to_json_data
from idemstore.observe import (
    CURRENT_CALL,
    OBSERVERS,
    CallFacts,
    CallReport,
    CallStart,
    Event,
    LeaseRenewal,
    ReleaseFailed,
    RenewalResult,
    StaleRecord,
    TakeOver,
    count_request,
    emit,
    end_scopes,
    event_log_fields,
    start_scopes,
    store_kind,
)
from idemstore.outcome import CallIdentity, Outcome, OutcomeKind, Unstored
from idemstore.records import DataRecord, RecordStatus
from idemstore.serialization import BaseIdempotencySerializer, NoOpSerializer
from idemstore.speedups import Heartbeat, consume_exception, shielded
from idemstore.stores.contract import RecordStore, is_own_completion
from idemstore.transactions import (
    StagedWrite,
    Staging,
    TransactionalStore,
    check_limits,
    item_size,
)

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
        self._store_kind = store_kind(store)

    # --- identity (pure) --------------------------------------------------------

    def identify(self, payload: Any) -> CallIdentity | None:
        """A payload's key and hash, by the config's JMESPaths; None when it has no key."""
        config = self.config
        data = to_json_data(payload)
        try:
            key_data = config.extract_key_data(data) if self._key_by_path else data
            validation_data = config.extract_validation_data(data) if self._validating else None
        # JMESPath errors are ValueErrors; the Powertools functions' decoding of JSON,
        # base64 and gzip text raises ValueError, OSError, EOFError or zlib.error.
        except (ValueError, TypeError, OSError, EOFError, zlib.error) as exc:
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
        if OBSERVERS.installed or logger.isEnabledFor(logging.DEBUG):
            return await self._observed(lambda: self.identify(payload), call, lambda_context)
        if disabled_by_environment():
            return await self._unprotected(OutcomeKind.DISABLED, call)
        identity = self.identify(payload)
        return await self._execute_identity(identity, call, lambda_context)

    async def process_keyed(
        self, key_data: Any, validation_data: Any, call: Call, *, lambda_context: Any = None
    ) -> Outcome[Any]:
        """``process`` for integrations that name the key data themselves (see ``identity_of``)."""
        if OBSERVERS.installed or logger.isEnabledFor(logging.DEBUG):
            return await self._observed(
                lambda: self.identity_of(key_data, validation_data), call, lambda_context
            )
        if disabled_by_environment():
            return await self._unprotected(OutcomeKind.DISABLED, call)
        identity = self.identity_of(key_data, validation_data)
        return await self._execute_identity(identity, call, lambda_context)

    async def run(self, payload: Any, call: Call, *, lambda_context: Any = None) -> Any:
        """``process``, giving only the value: what a decorated function returns."""
        outcome = await self.process(payload, call, lambda_context=lambda_context)
        return outcome.value

    async def execute(
        self, identity: CallIdentity | None, call: Call, *, lambda_context: Any = None
    ) -> Outcome[Any]:
        """Run ``call`` once for an identity; None runs it unprotected."""
        if OBSERVERS.installed or logger.isEnabledFor(logging.DEBUG):
            return await self._observed(lambda: identity, call, lambda_context, kill_switch=False)
        return await self._execute_identity(identity, call, lambda_context)

    async def _execute_identity(
        self, identity: CallIdentity | None, call: Call, lambda_context: Any
    ) -> Outcome[Any]:
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

    # --- observation (only when observers are installed or DEBUG logging is on) ------

    async def _observed(
        self,
        identify: Callable[[], CallIdentity | None],
        call: Call,
        lambda_context: Any,
        *,
        kill_switch: bool = True,
    ) -> Outcome[Any]:
        """A call reported to the observers and the log: scopes opened before any request."""
        started = self._clock()
        facts = CallFacts(start_scopes(CallStart(self.key_prefix, self._store_kind)))
        token = CURRENT_CALL.set(facts)
        identity: CallIdentity | None = None
        outcome: Outcome[Any] | None = None
        error: BaseException | None = None
        try:
            if kill_switch and disabled_by_environment():
                outcome = await self._unprotected(OutcomeKind.DISABLED, call)
            else:
                identity = identify()
                outcome = await self._execute_identity(identity, call, lambda_context)
            return outcome
        except BaseException as exc:
            error = exc
            raise
        finally:
            CURRENT_CALL.reset(token)
            report = CallReport(
                function=self.key_prefix,
                store=self._store_kind,
                decision=facts.decision(outcome.kind if outcome else None, error),
                requests=facts.requests,
                attempts=facts.attempts,
                wait_seconds=facts.wait_seconds,
                duration_seconds=max(0.0, self._clock() - started),
                error_type=type(error).__qualname__ if error is not None else None,
                key=identity.key if identity is not None else None,
            )
            del error  # the error's traceback holds this frame
            end_scopes(facts.scopes, report)
            if logger.isEnabledFor(logging.DEBUG):
                logger.debug(
                    "%s call: %s",
                    report.function,
                    report.decision.value,
                    extra=report.log_fields(),
                )

    def _event(self, event: Event, level: int = logging.WARNING, message: str = "") -> None:
        """Log an event (warnings for trouble) and report it to the current call's scopes."""
        if message and logger.isEnabledFor(level):
            logger.log(level, message, self.key_prefix, extra=event_log_fields(event))
        emit(event)

    def _note_wait(self, since: float, *, polled: bool) -> None:
        facts = CURRENT_CALL.get()
        if facts is not None:
            facts.wait_seconds += max(0.0, self._clock() - since)
            facts.waited = facts.waited or polled

    # --- steps ----------------------------------------------------------------------

    async def _unprotected(self, kind: OutcomeKind, call: Call) -> Outcome[Any]:
        facts = CURRENT_CALL.get()
        if facts is not None:
            facts.unprotected = kind
        if kind is OutcomeKind.DISABLED:
            DISABLED_NOTICE.warn()
        with Staging(self.store, None) as staged:
            result = await call()
        if staged.writes and not (isinstance(result, Unstored) and result.releases):
            # No record to complete: the writes still apply together, but not exactly once.
            count_request()
            await self._transactional_store().complete_with_writes(None, staged.writes)
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
        count_request()
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
        waiting_since: float | None = None
        try:
            for _ in range(max_polls + 1):
                if found is None:
                    return None
                decision = decide(found, now=self._clock(), payload_hash=identity.payload_hash)
                if decision is Decision.RETRY_ACQUIRE:
                    self._took_over(found)
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
                if waiting_since is None:
                    waiting_since = self._clock()
                await asyncio.sleep(min(delay, remaining))
                delay = min(delay * 2, MAX_POLL_SECONDS)
                found = await self._fetch(identity.key)
            raise IdempotencyAlreadyInProgressError(
                f"Execution already in progress with idempotency key: {identity.key}",
                old_data_record=found,
            )
        finally:
            if waiting_since is not None:
                self._note_wait(waiting_since, polled=True)

    def _took_over(self, found: DataRecord) -> None:
        stale = (
            StaleRecord.STALE_LOCK
            if found.status is RecordStatus.INPROGRESS
            else StaleRecord.EXPIRED
        )
        found_what = "a stale lock" if stale is StaleRecord.STALE_LOCK else "an expired record"
        self._event(
            TakeOver(self.key_prefix, self._store_kind, stale),
            message=f"%s: found {found_what}; taking it over",
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
        since = self._clock()
        try:
            with contextlib.suppress(TimeoutError):
                return await asyncio.wait_for(asyncio.shield(future), timeout)
            return None
        finally:
            self._note_wait(since, polled=False)

    async def _execute(
        self, lock: DataRecord, identity: CallIdentity, call: Call, *, heartbeat: bool
    ) -> Outcome[Any]:
        result, writes = await self._call_with_heartbeat(lock, call, heartbeat)
        # The function has run: record its result even if the caller is cancelled meanwhile,
        # rather than leave the lock to block duplicates until it lapses.
        return await shielded(self._finish(lock, identity, result, writes))[1]

    async def _call_with_heartbeat(
        self, lock: DataRecord, call: Call, heartbeat: bool
    ) -> tuple[Any, list[StagedWrite]]:
        """The function's result and the writes it staged (``idemstore.transactions``)."""
        lease = self.config.in_progress_lease_seconds
        renewer = Heartbeat(lambda: self._heartbeat(lock), lease / 3) if heartbeat else None
        try:
            with Staging(self.store, lock.idempotency_key) as staged:
                result = await call()
        except BaseException as exc:  # cancellation must release the lock too
            facts = CURRENT_CALL.get()
            if facts is not None:
                facts.function_error = exc
            if renewer is not None:
                await renewer.stop()
            await self._release(lock, exc)
            raise
        if renewer is not None:
            await renewer.stop()
        return result, staged.writes

    async def _heartbeat(self, lock: DataRecord) -> None:
        """Keep the lease alive while the function runs: renew now, then every third of it."""
        lease = self.config.in_progress_lease_seconds
        while True:
            expiry_ms = int((self._clock() + lease) * 1000)
            count_request()
            try:
                await self.store.renew_lease(lock, in_progress_expiry_timestamp=expiry_ms)
            except IdempotencyLeaseLostError:
                self._renewed(RenewalResult.LOST, "%s: the lease was taken over; renewal stopped")
                return
            except IdempotencyPersistenceLayerError:
                self._renewed(RenewalResult.FAILED, "%s: renewing the lease failed; retrying")
            else:
                self._renewed(RenewalResult.OK, "%s: lease renewed", logging.DEBUG)
            await asyncio.sleep(lease / 3)

    def _renewed(self, result: RenewalResult, message: str, level: int = logging.WARNING) -> None:
        self._event(LeaseRenewal(self.key_prefix, self._store_kind, result), level, message)

    def _release_failed(self, error: BaseException, message: str) -> None:
        event = ReleaseFailed(self.key_prefix, self._store_kind, type(error).__qualname__)
        self._event(event, message=message)

    async def _finish(
        self, lock: DataRecord, identity: CallIdentity, result: Any, writes: list[StagedWrite]
    ) -> Outcome[Any]:
        """Record what the call returned, or release the lock; the call's outcome.

        An error raised from here says the function ran, and carries its value.
        Staged writes commit with the completion; a call that records nothing
        applies none of them.
        """
        try:
            return await self._record(lock, identity, result, writes)
        except IdempotencyError as error:
            error.function_ran = True
            error.result = result.value if isinstance(result, Unstored) else result
            raise

    async def _record(
        self, lock: DataRecord, identity: CallIdentity, result: Any, writes: list[StagedWrite]
    ) -> Outcome[Any]:
        if not isinstance(result, Unstored):
            unstorable, response_data = self._storable(lock, result)
            if unstorable is None:
                record = await self._complete(lock, response_data, writes)
                return Outcome(OutcomeKind.EXECUTED, result, identity, record, stored=True)
            result = self._unstorable(result, unstorable) if self._unstorable else None
            if result is None:
                await self._release(lock, unstorable)
                raise unstorable
        if result.releases:
            if writes:
                logger.warning(
                    "%s: the result is not stored, so its %d staged writes are not applied",
                    lock.idempotency_key,
                    len(writes),
                )
            await self._release_best_effort(lock)
            return Outcome(
                OutcomeKind.EXECUTED, result.value, identity, unstored_reason=result.reason
            )
        unstorable, response_data = self._storable(lock, result.record_as, serialize=False)
        if unstorable is not None:
            await self._release(lock, unstorable)
            raise unstorable
        record = await self._complete(lock, response_data, writes)
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

    async def _complete_with_writes(
        self, lock: DataRecord, completed: DataRecord, writes: list[StagedWrite]
    ) -> None:
        """One transaction: the fenced completion, then the staged writes."""
        store = self._transactional_store()
        schema = store.schema
        check_limits(
            writes,
            own_table=store.table_name,
            own_key=schema.key(lock.idempotency_key),
            completion_bytes=item_size(to_item(schema, completed)),
        )
        await store.complete_with_writes(completed, writes)

    async def _release(self, lock: DataRecord, cause: BaseException) -> DataRecord | None:
        """Release the lock after the call failed; shielded from cancellation.

        Returns the record found instead when the lock was no longer ours to release.
        """
        count_request()
        try:
            await shielded(self.store.delete_record(lock))[1]
        except IdempotencyLeaseLostError as lost:
            return lost.current_record  # no longer an INPROGRESS lock of ours
        except IdempotencyError as release_error:
            self._release_failed(
                release_error,
                f"%s: releasing the lock after {type(cause).__name__} failed "
                f"({type(release_error).__name__}); it holds until its lease lapses",
            )
            if not isinstance(cause, Exception):
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
        count_request()
        try:
            await shielded(self.store.delete_record(lock))[1]
        except IdempotencyLeaseLostError:
            return  # not ours any more: nothing of ours to release
        except IdempotencyError as exc:
            self._release_failed(
                exc,
                f"%s: releasing the lock failed ({type(exc).__name__}); "
                "it holds until its lease lapses",
            )

    async def _put_lock(self, lock: DataRecord) -> None:
        """The lock's conditional put, shielded from the caller's cancellation.

        A caller cancelled while the put is on the wire cannot know whether it
        took the lock: the put settles in the background, and a lock it took is
        released there, instead of blocking duplicates until its lease lapses.
        """
        count_request(attempt=True)
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

    def _transactional_store(self) -> TransactionalStore:
        store = self.store
        assert isinstance(store, TransactionalStore)  # stage() refuses writes otherwise
        return store

    async def _complete(
        self, lock: DataRecord, response_data: str, writes: list[StagedWrite]
    ) -> DataRecord:
        completed = dataclasses.replace(
            lock,
            status=RecordStatus.COMPLETED,
            response_data=response_data,
            expiry_timestamp=int(self._clock()) + self.config.expires_after_seconds,
        )
        count_request()
        try:
            if writes:
                await self._complete_with_writes(lock, completed, writes)
            else:
                await self.store.update_record(completed)
        except (IdempotencyTransactionCanceledError, IdempotencyTransactionLimitError) as exc:
            # Nothing was applied: free the key, so a retry can run the function again.
            await self._release(lock, exc)
            raise
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
