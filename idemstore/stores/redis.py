"""``AsyncRedisStore``: idempotency records in Redis or Valkey.

The data layout is the one the Powertools Redis/cache persistence layer reads
and writes: the Redis key is the idempotency key itself, the value a JSON object
with ``status``, ``expiration`` (epoch seconds), ``in_progress_expiration``
(epoch milliseconds), ``validation`` and ``data`` (the result as JSON text).
idemstore adds ``owner_token`` (the lock's fence) and, for results larger than
the schema's compression threshold, ``data_zlib`` (zlib, then base64).

Every operation is one round trip. Each write is one Lua script over a single
key, so it is atomic on the server and runs unchanged on Redis Cluster and
Valkey Cluster. Scripts are sent with EVALSHA and reloaded on NOSCRIPT by the
client's ``Script`` object.

Client ownership: a client passed in is used and never closed; one made by
``AsyncRedisStore.from_url`` is owned and closed by ``aclose()``.
"""

from __future__ import annotations

import base64
import binascii
import json
import sys
from collections.abc import Awaitable, Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any, Protocol, Self

from idemstore.codec import data_attributes, from_item, to_item
from idemstore.errors import (
    IdempotencyConfigurationError,
    IdempotencyCorruptRecordError,
    IdempotencyItemNotFoundError,
    IdempotencyPersistenceLayerError,
)
from idemstore.expressions import AttributeValue
from idemstore.records import DataRecord
from idemstore.stores.contract import (
    APPLIED,
    WriteOutcome,
    fence_token,
    settle_fenced,
    settle_put,
)
from idemstore.table import TableSchema


class RedisScript(Protocol):
    """A registered Lua script: ``redis.commands.core.AsyncScript`` and valkey's twin."""

    def __call__(
        self,
        keys: Sequence[str] | None = None,
        args: Iterable[str | int] | None = None,
    ) -> Awaitable[Any]: ...


class RedisPipeline(Protocol):
    """The part of a client pipeline the batch read uses."""

    def get(self, name: str) -> Any: ...

    async def execute(self) -> list[Any]: ...


class RedisClient(Protocol):
    """The part of an asyncio client the store uses: ``redis.asyncio.Redis``,
    ``redis.asyncio.RedisCluster``, or the ``valkey`` package's asyncio twins."""

    def register_script(self, script: str) -> RedisScript: ...

    def get(self, name: str) -> Awaitable[Any]: ...

    def pipeline(self, transaction: bool = ...) -> RedisPipeline: ...

    async def aclose(self) -> None: ...


# The take-over rule of ``TableSchema.acquire_condition``, read from the stored JSON:
# no record, an expired one, or an INPROGRESS lock past its end. The times are the
# caller's (ARGV), not the server's TIME: the same clock the DynamoDB store uses, so
# both stores decide alike, a clock skew between client and server changes nothing,
# and tests can set the time. A value that is not a JSON object is returned, never
# overwritten: the client reports it as corrupt and nothing is lost.
# KEYS[1] key; ARGV: value, now_s, now_ms, ttl_ms, expiry_attr, status_attr, lock_end_attr.
_ACQUIRE = """
local current = redis.call('GET', KEYS[1])
if current then
  local ok, stored = pcall(cjson.decode, current)
  if not ok or type(stored) ~= 'table' then return {0, current} end
  local expiry = stored[ARGV[5]]
  local lock_end = stored[ARGV[7]]
  local free = (type(expiry) == 'number' and expiry < tonumber(ARGV[2]))
    or (stored[ARGV[6]] == 'INPROGRESS' and type(lock_end) == 'number'
        and lock_end < tonumber(ARGV[3]))
  if not free then return {0, current} end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[4])
return {1}
"""

# Completion and lease renewal: fenced on INPROGRESS and our owner token, then the
# changes applied in place, as DynamoDB's UpdateItem does (attributes not named stay).
# The key's TTL moves by as much as the record's expiry moved, so it keeps following
# the caller's clock set at the acquire.
# KEYS[1] key; ARGV: token, changes (JSON object), removals (JSON array),
# status_attr, owner_attr, expiry_attr.
_FENCED_UPDATE = """
local current = redis.call('GET', KEYS[1])
if not current then return {0} end
local ok, stored = pcall(cjson.decode, current)
if not ok or type(stored) ~= 'table' then return {0, current} end
if stored[ARGV[4]] ~= 'INPROGRESS' or stored[ARGV[5]] ~= ARGV[1] then return {0, current} end
local old_expiry = stored[ARGV[6]]
for name, value in pairs(cjson.decode(ARGV[2])) do stored[name] = value end
for _, name in ipairs(cjson.decode(ARGV[3])) do stored[name] = nil end
local value = cjson.encode(stored)
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then
  redis.call('SET', KEYS[1], value)
  return {1}
end
local new_expiry = stored[ARGV[6]]
if type(old_expiry) == 'number' and type(new_expiry) == 'number' then
  ttl = ttl + (new_expiry - old_expiry) * 1000
end
if ttl < 1 then ttl = 1 end
redis.call('SET', KEYS[1], value, 'PX', math.floor(ttl))
return {1}
"""

# Release: delete only our own record in the status we read it in, like
# ``TableSchema.owned_or_gone``; a record already gone is success.
# KEYS[1] key; ARGV: token, status, status_attr, owner_attr.
_RELEASE = """
local current = redis.call('GET', KEYS[1])
if not current then return {1} end
local ok, stored = pcall(cjson.decode, current)
if not ok or type(stored) ~= 'table' then return {0, current} end
if stored[ARGV[4]] == ARGV[1] and stored[ARGV[3]] == ARGV[2] then
  redis.call('DEL', KEYS[1])
  return {1}
end
return {0, current}
"""


class AsyncRedisStore:
    """Idempotency records in Redis or Valkey, one JSON string per key.

    The constructor does no I/O. Attribute options left at None take
    ``TableSchema``'s defaults, which are Powertools'; the idempotency key is
    the Redis key, so there is no key attribute and no sort-key mode.
    """

    def __init__(
        self,
        client: RedisClient,
        *,
        expiry_attr: str | None = None,
        in_progress_expiry_attr: str | None = None,
        status_attr: str | None = None,
        data_attr: str | None = None,
        validation_key_attr: str | None = None,
        owner_token_attr: str | None = None,
        compressed_data_attr: str | None = None,
        compress_threshold_bytes: int | None = None,
    ) -> None:
        self._schema = TableSchema.build(
            expiry_attr=expiry_attr,
            in_progress_expiry_attr=in_progress_expiry_attr,
            status_attr=status_attr,
            data_attr=data_attr,
            validation_key_attr=validation_key_attr,
            owner_token_attr=owner_token_attr,
            compressed_data_attr=compressed_data_attr,
            compress_threshold_bytes=compress_threshold_bytes,
        )
        self._client = client
        self._owns_client = False
        self._errors = _driver_errors()
        self._acquire = client.register_script(_ACQUIRE)
        self._fenced_update = client.register_script(_FENCED_UPDATE)
        self._release = client.register_script(_RELEASE)

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> AsyncRedisStore:
        """A store on a client of its own (``redis.asyncio.from_url``), closed by ``aclose()``.

        ``kwargs`` are the store's options (attribute names, compression threshold).
        """
        try:
            import redis.asyncio
        except ImportError as exc:
            raise IdempotencyConfigurationError(
                'AsyncRedisStore.from_url needs the redis package: pip install "idemstore[redis]"'
            ) from exc
        store = cls(redis.asyncio.from_url(url), **kwargs)
        store._owns_client = True
        return store

    @property
    def schema(self) -> TableSchema:
        return self._schema

    @property
    def client(self) -> RedisClient:
        return self._client

    def __repr__(self) -> str:
        return f"AsyncRedisStore({self._client!r})"

    async def aclose(self) -> None:
        """Close the client the store owns; a caller's client is left open."""
        if self._owns_client:
            self._owns_client = False
            await self._client.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # --- record operations ----------------------------------------------------

    async def get_record(self, idempotency_key: str) -> DataRecord:
        try:
            raw = await self._client.get(idempotency_key)
        except self._errors as exc:
            raise self._translate(exc, "GET", idempotency_key) from exc
        if raw is None:
            raise IdempotencyItemNotFoundError(idempotency_key)
        return self.decode(idempotency_key, raw)

    async def get_records(self, idempotency_keys: Sequence[str]) -> dict[str, DataRecord]:
        """The records found, by key; missing keys are absent.

        One pipelined round trip (on a cluster client, one per node holding the keys).
        """
        keys = list(dict.fromkeys(idempotency_keys))
        if not keys:
            return {}
        pipeline = self._client.pipeline(transaction=False)
        for key in keys:
            pipeline.get(key)
        try:
            values = await pipeline.execute()
        except self._errors as exc:
            raise self._translate(exc, "batch GET", None) from exc
        return {
            key: self.decode(key, raw)
            for key, raw in zip(keys, values, strict=True)
            if raw is not None
        }

    async def put_record(self, record: DataRecord, *, now: float) -> None:
        schema = self._schema
        now_ms = int(now * 1000)
        # The record may be taken over once expiration < now_s, i.e. from the second
        # after its expiration: the key lives until then, measured on the caller's clock.
        ttl_ms = max(1, (record.expiry_timestamp + 1) * 1000 - now_ms)
        outcome = await self._run(
            self._acquire,
            "acquire",
            record.idempotency_key,
            self.encode(record),
            int(now),
            now_ms,
            ttl_ms,
            schema.expiry_attr,
            schema.status_attr,
            schema.in_progress_expiry_attr,
        )
        settle_put(record, outcome)

    async def update_record(self, record: DataRecord) -> None:
        schema = self._schema
        changes: dict[str, Any] = {
            schema.status_attr: record.status.value,
            schema.expiry_attr: record.expiry_timestamp,
        }
        stored = _json_fields(data_attributes(schema, record))
        changes.update(stored)
        removals = [a for a in (schema.data_attr, schema.compressed_data_attr) if a not in stored]
        if record.payload_hash:
            changes[schema.validation_key_attr] = record.payload_hash
        outcome = await self._update(record, changes, removals, "complete")
        settle_fenced(record, outcome, "complete")

    async def renew_lease(self, record: DataRecord, *, in_progress_expiry_timestamp: int) -> None:
        schema = self._schema
        # As TableSchema.renewal_update: an expired record may be taken over whatever
        # its lock says, so the expiry moves too when the lease would outlive it.
        expiry = max(record.expiry_timestamp, in_progress_expiry_timestamp // 1000 + 1)
        changes = {
            schema.in_progress_expiry_attr: in_progress_expiry_timestamp,
            schema.expiry_attr: expiry,
        }
        outcome = await self._update(record, changes, [], "renew")
        settle_fenced(record, outcome, "renew the lease of")

    async def delete_record(self, record: DataRecord) -> None:
        schema = self._schema
        outcome = await self._run(
            self._release,
            "release",
            record.idempotency_key,
            fence_token(record),
            record.status.value,
            schema.status_attr,
            schema.owner_token_attr,
        )
        settle_fenced(record, outcome, "release")

    # --- codec ------------------------------------------------------------------

    def encode(self, record: DataRecord) -> str:
        """The JSON value stored for a record: Powertools' fields plus idemstore's own."""
        item = to_item(self._schema, record)
        for attr in self._schema.key(record.idempotency_key):
            del item[attr]  # the idempotency key is the Redis key, not a field
        return json.dumps(_json_fields(item), separators=(",", ":"))

    def decode(self, idempotency_key: str, raw: bytes | str) -> DataRecord:
        """Read a stored value; one that is not a valid record raises
        ``IdempotencyCorruptRecordError`` naming the key."""
        schema = self._schema
        try:
            value = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise IdempotencyCorruptRecordError(
                f"value is not JSON: {exc}", idempotency_key=idempotency_key, attribute="*"
            ) from exc
        if not isinstance(value, dict):
            raise IdempotencyCorruptRecordError(
                f"value is not a JSON object but {type(value).__name__}",
                idempotency_key=idempotency_key,
                attribute="*",
            )
        item: dict[str, AttributeValue] = {
            attr: _typed(value, attr) for attr in value if attr != schema.compressed_data_attr
        }
        item.update(schema.key(idempotency_key))
        compressed = value.get(schema.compressed_data_attr)
        if compressed is not None:
            item[schema.compressed_data_attr] = _unbase64(
                compressed, idempotency_key, schema.compressed_data_attr
            )
        return from_item(schema, item)

    # --- plumbing -------------------------------------------------------------

    async def _update(
        self, record: DataRecord, changes: Mapping[str, Any], removals: list[str], action: str
    ) -> WriteOutcome:
        schema = self._schema
        return await self._run(
            self._fenced_update,
            action,
            record.idempotency_key,
            fence_token(record),
            json.dumps(changes, separators=(",", ":")),
            json.dumps(removals),
            schema.status_attr,
            schema.owner_token_attr,
            schema.expiry_attr,
        )

    async def _run(
        self, script: RedisScript, action: str, idempotency_key: str, *args: str | int
    ) -> WriteOutcome:
        """Run one single-key script; its reply is ``[1]`` (applied), or ``[0]`` with the
        value that failed the condition, if any."""
        try:
            reply = await script(keys=[idempotency_key], args=args)
        except self._errors as exc:
            raise self._translate(exc, action, idempotency_key) from exc
        if reply[0] == 1:
            return APPLIED
        if len(reply) < 2 or reply[1] is None:
            return None
        return self.decode(idempotency_key, reply[1])

    def _translate(
        self, exc: BaseException, action: str, idempotency_key: str | None
    ) -> IdempotencyPersistenceLayerError:
        message = str(exc)
        if "WRONGTYPE" in message:
            return IdempotencyCorruptRecordError(
                f"the key holds a value that is not a string: {message}",
                idempotency_key=idempotency_key,
                attribute="*",
            )
        target = "several keys" if idempotency_key is None else repr(idempotency_key)
        return IdempotencyPersistenceLayerError(
            f"{action} of {target} failed: {type(exc).__name__}: {message}"
        )


def _driver_errors() -> tuple[type[BaseException], ...]:
    """The error roots of the client libraries loaded: a client exists, so its library
    is imported; neither is imported here. OSError covers sockets failing underneath."""
    errors: list[type[BaseException]] = [OSError]
    for module_name, root in (
        ("redis.exceptions", "RedisError"),
        ("valkey.exceptions", "ValkeyError"),
    ):
        module = sys.modules.get(module_name)
        if module is not None:
            errors.append(getattr(module, root))
    return tuple(errors)


def _json_fields(item: Mapping[str, AttributeValue]) -> dict[str, Any]:
    """DynamoDB-typed attributes as JSON fields: numbers as integers, binary as base64."""
    fields: dict[str, Any] = {}
    for attr, typed in item.items():
        ((kind, raw),) = typed.items()
        if kind == "N":
            fields[attr] = int(raw)
        elif kind == "B":
            fields[attr] = base64.b64encode(raw).decode("ascii")
        else:
            fields[attr] = raw
    return fields


def _typed(value: Mapping[str, Any], attr: str) -> AttributeValue:
    """A JSON field in DynamoDB's typed form, so ``TableSchema.from_item`` checks it."""
    field = value[attr]
    if field is None:
        return {"NULL": True}
    if isinstance(field, bool):
        return {"BOOL": field}
    if isinstance(field, int | float):
        return {"N": str(field)}
    if isinstance(field, str):
        return {"S": field}
    if isinstance(field, list):
        return {"L": [_typed({"v": v}, "v") for v in field]}
    return {"M": {k: _typed(field, k) for k in field}}


def _unbase64(field: Any, idempotency_key: str, attr: str) -> AttributeValue:
    if not isinstance(field, str):
        return {"S": str(field)}  # from_item rejects it as not binary
    try:
        return {"B": base64.b64decode(field, validate=True)}
    except binascii.Error as exc:
        raise IdempotencyCorruptRecordError(
            f"compressed result is not base64: {exc}",
            idempotency_key=idempotency_key,
            attribute=attr,
        ) from exc
