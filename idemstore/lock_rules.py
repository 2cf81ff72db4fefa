"""The lock's rules, written once: taking over, fencing, completing, renewing, releasing. Pure.

Each rule is a condition or update from ``idemstore.expressions``: the stores
send them (DynamoDB) or apply them with ``evaluate``/``apply_update``
(in memory), and ``lock_available`` evaluates the take-over rule in Python, so
the engine's decisions and the stores' writes cannot disagree.

The take-over rule is the Powertools persistence layer's, so both libraries
respect each other's locks while a function is being migrated.
"""

from __future__ import annotations

from collections.abc import Mapping

from idemstore.codec import data_attributes, lock_attributes
from idemstore.expressions import (
    Action,
    Attr,
    CompiledRequest,
    Condition,
    Operand,
    Param,
    PreparedRequest,
    Update,
    Value,
    evaluate,
    prepare,
    update,
)
from idemstore.records import DataRecord, RecordStatus
from idemstore.table import TableSchema

# --- taking the lock ---------------------------------------------------------------


def acquire_condition(schema: TableSchema, now: float) -> Condition:
    """The take-over rule: no record, an expired one, or a stale INPROGRESS lock."""
    return _acquire_rule(schema, **_acquire_params(now))


def acquire_request(schema: TableSchema, now: float) -> CompiledRequest:
    """``compile_request(condition=acquire_condition(schema, now))``, from a request
    compiled once per schema: the lock's put is sent on every call."""
    return prepared_requests(schema).acquire.bind(**_acquire_params(now))


def lock_available(record: DataRecord, now: float) -> bool:
    """Whether an acquire at ``now`` would succeed over this record, by the rule the stores send."""
    schema = _DEFAULT_SCHEMA
    # Only the attributes the rule reads: a large result is not re-encoded for it.
    lock = lock_attributes(schema, record)
    return evaluate(prepared_requests(schema).acquire_rule, lock, _acquire_params(now))


def _acquire_rule(schema: TableSchema, now_s: Operand, now_ms: Operand) -> Condition:
    in_progress_expiry = Attr(schema.in_progress_expiry_attr)
    return (
        Attr(schema.key_attr).not_exists()
        | (Attr(schema.expiry_attr) < now_s)
        | (
            (Attr(schema.status_attr) == RecordStatus.INPROGRESS.value)
            & in_progress_expiry.exists()
            & (in_progress_expiry < now_ms)
        )
    )


def _acquire_params(now: float) -> dict[str, Value]:
    """The rule's times: epoch seconds for the record, milliseconds for the lock."""
    return {"now_s": int(now), "now_ms": int(now * 1000)}


# --- fences ------------------------------------------------------------------------


def owned_in_progress(schema: TableSchema, token: str) -> Condition:
    """Fence for completion and lease renewal: still INPROGRESS and still ours."""
    return _owned_in_progress_rule(schema, token)


def _owned_in_progress_rule(schema: TableSchema, token: Operand) -> Condition:
    return (Attr(schema.status_attr) == RecordStatus.INPROGRESS.value) & (
        Attr(schema.owner_token_attr) == token
    )


def owned_or_gone(schema: TableSchema, token: str, status: RecordStatus) -> Condition:
    """Fence for release: ours and still in ``status``, or already gone (a retried delete).

    The status keeps a release from deleting the result of a completion whose
    answer was lost: the engine releases an INPROGRESS lock only.
    """
    return Attr(schema.key_attr).not_exists() | (
        (Attr(schema.owner_token_attr) == token) & (Attr(schema.status_attr) == status.value)
    )


# --- completion and renewal ----------------------------------------------------------


def completion_update(schema: TableSchema, record: DataRecord) -> Update:
    """Turn the INPROGRESS item into ``record`` (COMPLETED) in place."""
    stored = {
        attr: raw
        for attr, value in data_attributes(schema, record).items()
        for raw in value.values()
    }
    return _completion_rule(
        schema, record.status.value, record.expiry_timestamp, stored, record.payload_hash or None
    )


def _completion_rule(
    schema: TableSchema,
    status: Operand,
    expiry: Operand,
    stored: Mapping[str, Operand],
    payload_hash: Operand | None,
) -> Update:
    actions: list[Action] = [
        Attr(schema.status_attr).set(status),
        Attr(schema.expiry_attr).set(expiry),
    ]
    for attr in (schema.data_attr, schema.compressed_data_attr):
        actions.append(Attr(attr).set(stored[attr]) if attr in stored else Attr(attr).remove())
    if payload_hash is not None:
        actions.append(Attr(schema.validation_key_attr).set(payload_hash))
    return update(*actions)


def completion_request(schema: TableSchema, record: DataRecord, token: str) -> CompiledRequest:
    """``compile_request(condition=owned_in_progress(schema, token),
    update=completion_update(schema, record))``, from a request compiled once per
    schema and shape (which data attribute, whether a payload hash)."""
    params: dict[str, Value] = {
        "token": token,
        "status": record.status.value,
        "expiry": record.expiry_timestamp,
    }
    stored = data_attributes(schema, record)
    data_attr = next(iter(stored), None)  # at most one: plain or compressed
    if data_attr is not None:
        ((_, params["data"]),) = stored[data_attr].items()
    if record.payload_hash:
        params["payload_hash"] = record.payload_hash
    prepared = prepared_requests(schema).completion(data_attr, bool(record.payload_hash))
    return prepared.bind(**params)


def renewal_update(
    schema: TableSchema, record: DataRecord, in_progress_expiry_timestamp: int
) -> Update:
    """Move the lock's end; the record's expiry moves too if the lease would outlive it,
    since an expired record may be taken over whatever its lock says."""
    expiry = max(record.expiry_timestamp, in_progress_expiry_timestamp // 1000 + 1)
    return update(
        Attr(schema.in_progress_expiry_attr).set(in_progress_expiry_timestamp),
        Attr(schema.expiry_attr).set(expiry),
    )


# --- requests compiled once per schema ----------------------------------------------------


class PreparedRequests:
    """A schema's requests sent on every call, compiled once (see ``expressions.prepare``).

    A measured speed-up: building and compiling the expression trees on every
    call cost a fifth of idemstore's own client CPU per call.
    """

    def __init__(self, schema: TableSchema) -> None:
        self.schema = schema
        self.acquire_rule = _acquire_rule(schema, Param("now_s"), Param("now_ms"))
        self.acquire = prepare(condition=self.acquire_rule)
        self._completions: dict[tuple[str | None, bool], PreparedRequest] = {}

    def completion(self, data_attr: str | None, hashed: bool) -> PreparedRequest:
        prepared = self._completions.get((data_attr, hashed))
        if prepared is None:
            completion_update = _completion_rule(
                self.schema,
                Param("status"),
                Param("expiry"),
                {data_attr: Param("data")} if data_attr else {},
                Param("payload_hash") if hashed else None,
            )
            prepared = prepare(
                condition=_owned_in_progress_rule(self.schema, Param("token")),
                update=completion_update,
            )
            self._completions[(data_attr, hashed)] = prepared
        return prepared


def prepared_requests(schema: TableSchema) -> PreparedRequests:
    """The schema's prepared requests, made on first use and kept on the schema itself."""
    prepared = schema._prepared_requests
    # A copy made by dataclasses.replace starts without requests; the check on the
    # schema keeps that true of any other way of copying.
    if prepared is None or prepared.schema is not schema:
        prepared = PreparedRequests(schema)
        object.__setattr__(schema, "_prepared_requests", prepared)  # a cache, not an option
    return prepared


_DEFAULT_SCHEMA = TableSchema(static_pk_value="")
"""Names for ``lock_available``, which reads only the attributes the rule needs."""
