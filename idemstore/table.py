"""The idempotency table's attribute names and key shape: the one source of their defaults.

Defaults are the Powertools defaults, so both libraries share a table. In
sort-key mode the partition key holds ``static_pk_value`` and the sort key the
idempotency key. Both stores, ``create_table`` and the command line read
these defaults from here.
"""

from __future__ import annotations

from dataclasses import MISSING, dataclass, field, fields
from typing import TYPE_CHECKING, Any

from idemstore.codec import DEFAULT_COMPRESS_THRESHOLD_BYTES
from idemstore.errors import IdempotencyConfigurationError
from idemstore.expressions import AttributeValue
from idemstore.lambda_runtime import lambda_function_name

if TYPE_CHECKING:
    from idemstore.lock_rules import PreparedRequests

STATIC_PK_PREFIX = "idempotency#"


def default_static_pk_value(function_name: str | None) -> str:
    """The sort-key mode partition value for a function: ``idempotency#{function name}``."""
    return f"{STATIC_PK_PREFIX}{function_name or ''}"


def _static_pk_value_from_environment() -> str:
    return default_static_pk_value(lambda_function_name())


_NAME_OPTIONS = (
    "key_attr",
    "sort_key_attr",
    "expiry_attr",
    "in_progress_expiry_attr",
    "status_attr",
    "data_attr",
    "validation_key_attr",
    "owner_token_attr",
    "compressed_data_attr",
)


@dataclass(frozen=True, slots=True, kw_only=True)
class TableSchema:
    """Attribute names of the idempotency table, and the primary key of a record's item.

    ``static_pk_value`` defaults to ``idempotency#`` plus the Lambda function's
    name (``AWS_LAMBDA_FUNCTION_NAME``), read when the schema is built. An empty
    or repeated name raises ``IdempotencyConfigurationError``.
    """

    key_attr: str = "id"
    sort_key_attr: str | None = None
    static_pk_value: str = field(default_factory=_static_pk_value_from_environment)
    expiry_attr: str = "expiration"
    in_progress_expiry_attr: str = "in_progress_expiration"
    status_attr: str = "status"
    data_attr: str = "data"
    validation_key_attr: str = "validation"
    owner_token_attr: str = "owner_token"
    compressed_data_attr: str = "data_zlib"
    compress_threshold_bytes: int | None = DEFAULT_COMPRESS_THRESHOLD_BYTES

    # Requests sent on every call, compiled once for this schema (lock_rules.prepared_requests).
    # Not options: outside the constructor, equality and hashing; a copy starts without them.
    _prepared_requests: PreparedRequests | None = field(
        default=None, init=False, repr=False, compare=False
    )
    # The schema's own part of codec's bound on an item's size.
    _size_bound: tuple[TableSchema, int] | None = field(
        default=None, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        for name in _NAME_OPTIONS:
            value = getattr(self, name)
            if value is None and name == "sort_key_attr":
                continue
            if not isinstance(value, str) or not value:
                raise IdempotencyConfigurationError(
                    f"{name} must be a non-empty string, not {value!r}"
                )
        if not isinstance(self.static_pk_value, str):
            raise IdempotencyConfigurationError(
                f"static_pk_value must be a string, not {self.static_pk_value!r}"
            )
        threshold = self.compress_threshold_bytes
        if threshold is not None and (
            not isinstance(threshold, int) or isinstance(threshold, bool) or threshold < 0
        ):
            raise IdempotencyConfigurationError(
                f"compress_threshold_bytes must be an integer >= 0 or None, not {threshold!r}"
            )
        if self.sort_key_attr is not None and self.sort_key_attr == self.key_attr:
            raise IdempotencyConfigurationError(
                f"key_attr [{self.key_attr}] and sort_key_attr [{self.sort_key_attr}] "
                "cannot be the same"
            )
        options_of: dict[str, list[str]] = {}
        for name in _NAME_OPTIONS:
            if (value := getattr(self, name)) is not None:
                options_of.setdefault(value, []).append(name)
        for value, options in options_of.items():
            if len(options) > 1:
                raise IdempotencyConfigurationError(
                    f"attribute names must be distinct: {' and '.join(options)} are both {value!r}"
                )

    @classmethod
    def build(cls, **kwargs: Any) -> TableSchema:
        """Construct from the options given (None means the default); an invalid value
        raises ``IdempotencyConfigurationError``."""
        options = {name: value for name, value in kwargs.items() if value is not None}
        return cls(**options)

    @classmethod
    def default(cls, name: str) -> Any:
        """The default of an option, e.g. ``TableSchema.default("key_attr")``."""
        option = {f.name: f for f in fields(cls) if f.init}[name]
        if option.default_factory is not MISSING:
            return option.default_factory()
        return option.default

    @property
    def record_key_attr(self) -> str:
        """The attribute holding the idempotency key itself."""
        return self.sort_key_attr or self.key_attr

    def key(self, idempotency_key: str) -> dict[str, AttributeValue]:
        """The primary key of the item for ``idempotency_key``."""
        if self.sort_key_attr is not None:
            return {
                self.key_attr: {"S": self.static_pk_value},
                self.sort_key_attr: {"S": idempotency_key},
            }
        return {self.key_attr: {"S": idempotency_key}}
