"""The engine's pure parts: decisions, local cache, serializers, config validation."""

import dataclasses
import datetime as dt
import hashlib
from typing import Any

import pydantic
import pytest

from idemstore import (
    DataclassSerializer,
    DataRecord,
    IdempotencyConfig,
    IdempotencyConfigurationError,
    NoOpSerializer,
    PydanticSerializer,
    RecordStatus,
)
from idemstore.cache import LocalCache
from idemstore.decisions import Decision, decide
from idemstore.engine import disabled_by_environment
from idemstore.serialization import resolve_serializer, serializer_for_type

NOW = 1_700_000_000.0
NOW_MS = int(NOW * 1000)


def completed(
    key: str = "k", *, expires_in: int = 60, payload_hash: str | None = None
) -> DataRecord:
    return DataRecord(
        idempotency_key=key,
        status=RecordStatus.COMPLETED,
        expiry_timestamp=int(NOW) + expires_in,
        response_data='{"ok": true}',
        payload_hash=payload_hash,
    )


def in_progress(*, lock_ms_left: int | None, expires_in: int = 60) -> DataRecord:
    return DataRecord(
        idempotency_key="k",
        status=RecordStatus.INPROGRESS,
        expiry_timestamp=int(NOW) + expires_in,
        in_progress_expiry_timestamp=None if lock_ms_left is None else NOW_MS + lock_ms_left,
        owner_token="someone-else",
    )


# --- decisions --------------------------------------------------------------------


class TestDecide:
    def test_completed_live_record_replays(self) -> None:
        assert decide(completed(), now=NOW, payload_hash=None) is Decision.REPLAY

    def test_completed_record_with_matching_hash_replays(self) -> None:
        record = completed(payload_hash="abc")
        assert decide(record, now=NOW, payload_hash="abc") is Decision.REPLAY

    def test_differing_payload_hash_is_a_mismatch(self) -> None:
        record = completed(payload_hash="abc")
        assert decide(record, now=NOW, payload_hash="xyz") is Decision.PAYLOAD_MISMATCH

    def test_mismatch_on_an_in_progress_record_too(self) -> None:
        record = dataclasses.replace(in_progress(lock_ms_left=5_000), payload_hash="abc")
        assert decide(record, now=NOW, payload_hash="xyz") is Decision.PAYLOAD_MISMATCH

    def test_validation_off_ignores_the_stored_hash(self) -> None:
        record = completed(payload_hash="abc")
        assert decide(record, now=NOW, payload_hash=None) is Decision.REPLAY

    def test_expired_completed_record_is_taken_over(self) -> None:
        record = completed(expires_in=-1)
        assert decide(record, now=NOW, payload_hash=None) is Decision.RETRY_ACQUIRE

    def test_expired_record_is_taken_over_even_with_a_differing_hash(self) -> None:
        record = completed(expires_in=-1, payload_hash="abc")
        assert decide(record, now=NOW, payload_hash="xyz") is Decision.RETRY_ACQUIRE

    def test_live_lock_is_in_progress(self) -> None:
        record = in_progress(lock_ms_left=5_000)
        assert decide(record, now=NOW, payload_hash=None) is Decision.IN_PROGRESS

    def test_stale_lock_is_taken_over(self) -> None:
        record = in_progress(lock_ms_left=-1)
        assert decide(record, now=NOW, payload_hash=None) is Decision.RETRY_ACQUIRE

    def test_lock_without_its_own_expiry_lasts_until_the_record_expires(self) -> None:
        # Powertools writes no in-progress expiry outside Lambda.
        assert decide(in_progress(lock_ms_left=None), now=NOW, payload_hash=None) is (
            Decision.IN_PROGRESS
        )
        stale = in_progress(lock_ms_left=None, expires_in=-1)
        assert decide(stale, now=NOW, payload_hash=None) is Decision.RETRY_ACQUIRE


# --- local cache ------------------------------------------------------------------


class TestLocalCache:
    def test_returns_a_completed_record(self) -> None:
        cache = LocalCache(4)
        record = completed("a")
        cache.put(record)
        assert cache.get("a", now=NOW) == record
        assert cache.get("b", now=NOW) is None

    def test_never_keeps_an_in_progress_record(self) -> None:
        cache = LocalCache(4)
        cache.put(in_progress(lock_ms_left=5_000))
        assert cache.get("k", now=NOW) is None
        assert len(cache) == 0

    def test_drops_an_expired_record(self) -> None:
        cache = LocalCache(4)
        cache.put(completed("a", expires_in=10))
        assert cache.get("a", now=NOW + 11) is None
        assert len(cache) == 0

    def test_evicts_the_least_recently_used(self) -> None:
        cache = LocalCache(2)
        cache.put(completed("a"))
        cache.put(completed("b"))
        assert cache.get("a", now=NOW) is not None  # "a" is now the most recent
        cache.put(completed("c"))
        assert len(cache) == 2
        assert cache.get("b", now=NOW) is None
        assert cache.get("a", now=NOW) is not None
        assert cache.get("c", now=NOW) is not None


# --- serializers ------------------------------------------------------------------


class Receipt(pydantic.BaseModel):
    order_id: str
    at: dt.datetime


@dataclasses.dataclass
class Point:
    x: int
    y: int


class TestSerializers:
    def test_pydantic_round_trip(self) -> None:
        serializer = PydanticSerializer(Receipt)
        receipt = Receipt(order_id="o-1", at=dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.UTC))
        data = serializer.to_dict(receipt)
        assert isinstance(data, dict)
        assert serializer.from_dict(data) == receipt

    def test_dataclass_round_trip(self) -> None:
        serializer = DataclassSerializer(Point)
        assert serializer.to_dict(Point(1, 2)) == {"x": 1, "y": 2}
        assert serializer.from_dict({"x": 1, "y": 2}) == Point(1, 2)

    def test_no_op_returns_data_as_is(self) -> None:
        data = {"a": [1, 2]}
        assert NoOpSerializer().to_dict(data) is data
        assert NoOpSerializer().from_dict(data) is data

    def test_optional_model_lets_none_through(self) -> None:
        serializer = serializer_for_type(Receipt | None)
        assert serializer is not None
        assert serializer.to_dict(None) is None
        assert serializer.from_dict(None) is None
        assert serializer.from_dict({"order_id": "o", "at": "2024-01-02T00:00:00Z"}) == Receipt(
            order_id="o", at=dt.datetime(2024, 1, 2, tzinfo=dt.UTC)
        )

    @pytest.mark.parametrize("tp", [int, dict, dict[str, Any], None])
    def test_no_serializer_for_plain_types(self, tp: Any) -> None:
        assert serializer_for_type(tp) is None

    def test_a_union_of_models_replays_the_member_the_data_fits(self) -> None:
        serializer = serializer_for_type(Receipt | Point)
        assert serializer is not None
        assert serializer.from_dict({"x": 1, "y": 2}) == Point(1, 2)

    def test_inferred_from_the_return_annotation(self) -> None:
        async def make() -> Point:
            return Point(1, 2)

        assert resolve_serializer(make, None).from_dict({"x": 3, "y": 4}) == Point(3, 4)

    def test_unresolvable_annotation_falls_back_to_plain_json(self) -> None:
        async def make() -> "NoSuchType":  # type: ignore[name-defined]  # noqa: F821  # unresolvable on purpose
            return None

        serializer = resolve_serializer(make, None)
        data = {"at": "2024-01-02"}
        assert serializer.to_dict(data) is data
        assert serializer.from_dict(data) is data

    def test_explicit_type_wins_over_the_annotation(self) -> None:
        async def make() -> dict[str, int]:
            return {"x": 1, "y": 2}

        assert resolve_serializer(make, Point).from_dict({"x": 1, "y": 2}) == Point(1, 2)

    def test_explicit_serializer_object_is_used_as_given(self) -> None:
        async def make() -> Point:
            return Point(1, 2)

        given = NoOpSerializer()
        assert resolve_serializer(make, given) is given

    def test_explicit_type_that_is_no_model_is_refused(self) -> None:
        async def make() -> int:
            return 1

        with pytest.raises(TypeError, match="neither a pydantic model nor a dataclass"):
            resolve_serializer(make, int)


# --- configuration ----------------------------------------------------------------


class TestConfig:
    def test_defaults_are_the_powertools_defaults(self) -> None:
        config = IdempotencyConfig()
        assert config.expires_after_seconds == 3600
        assert config.local_cache_max_items == 256
        assert config.hash_function == "md5"
        assert config.use_local_cache is False
        assert config.raise_on_no_idempotency_key is False
        assert config.wait_for_in_progress_seconds == 0

    def test_is_frozen(self) -> None:
        config = IdempotencyConfig()
        with pytest.raises(dataclasses.FrozenInstanceError):
            config.expires_after_seconds = 10  # type: ignore[misc]  # the point of the test

    @pytest.mark.parametrize(
        ("options", "message"),
        [
            ({"hash_function": "no_such_hash"}, "unknown hash function"),
            ({"expires_after_seconds": 0}, "expires_after_seconds"),
            ({"expires_after_seconds": -5}, "expires_after_seconds"),
            ({"local_cache_max_items": 0}, "local_cache_max_items"),
            ({"in_progress_lease_seconds": 0}, "in_progress_lease_seconds"),
            ({"wait_for_in_progress_seconds": -1}, "wait_for_in_progress_seconds"),
            ({"event_key_jmespath": "body.[order"}, "invalid JMESPath"),
            ({"payload_validation_jmespath": "a[?"}, "invalid JMESPath"),
            ({"jmespath_options": {"no_such_option": 1}}, "jmespath_options"),
            ({"no_such_option": True}, "no_such_option"),
        ],
    )
    def test_invalid_values_fail_at_construction(
        self, options: dict[str, Any], message: str
    ) -> None:
        with pytest.raises(IdempotencyConfigurationError, match=message):
            IdempotencyConfig(**options)

    def test_configuration_error_is_a_value_error(self) -> None:
        with pytest.raises(ValueError, match="unknown hash function"):
            IdempotencyConfig(hash_function="nope")

    @pytest.mark.parametrize("name", ["md5", "sha256", "sha3_256", "blake2b"])
    def test_known_hash_functions_are_accepted(self, name: str) -> None:
        assert IdempotencyConfig(hash_function=name).hash_function == name

    @pytest.mark.parametrize("name", ["shake_128", "shake_256"])
    def test_hash_functions_needing_a_length_are_refused(self, name: str) -> None:
        # Their hexdigest() needs a length, so no key could ever be made with them.
        assert name in hashlib.algorithms_available
        with pytest.raises(IdempotencyConfigurationError, match="hash function"):
            IdempotencyConfig(hash_function=name)

    def test_jmespath_extracts_key_and_validation_data(self) -> None:
        config = IdempotencyConfig(
            event_key_jmespath="powertools_json(body).order_id",
            payload_validation_jmespath="amount",
        )
        event = {"body": '{"order_id": "o-1"}', "amount": 5}
        assert config.extract_key_data(event) == "o-1"
        assert config.payload_validation_enabled
        assert config.extract_validation_data(event) == 5
        assert not IdempotencyConfig().payload_validation_enabled


@pytest.mark.parametrize(
    ("value", "disabled"),
    [("1", True), ("true", True), ("YES", True), ("0", False), ("", False), ("off", False)],
)
def test_kill_switch_values(monkeypatch: pytest.MonkeyPatch, value: str, disabled: bool) -> None:
    monkeypatch.setenv("IDEMSTORE_DISABLED", value)
    assert disabled_by_environment() is disabled
