"""The idempotency table's attribute names and key shape: the one source of their defaults.

Defaults are the Powertools defaults, so both libraries share a table. In
sort-key mode the partition key holds ``static_pk_value`` and the sort key the
idempotency key. Both stores, ``create_table`` and the command line read
these defaults from here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, model_validator

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


class TableSchema(BaseModel):
    """Attribute names of the idempotency table, and the primary key of a record's item.

    ``static_pk_value`` defaults to ``idempotency#`` plus the Lambda function's
    name (``AWS_LAMBDA_FUNCTION_NAME``), read when the schema is built.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    key_attr: str = Field(default="id", min_length=1)
    sort_key_attr: str | None = Field(default=None, min_length=1)
    static_pk_value: str = Field(default_factory=_static_pk_value_from_environment)
    expiry_attr: str = Field(default="expiration", min_length=1)
    in_progress_expiry_attr: str = Field(default="in_progress_expiration", min_length=1)
    status_attr: str = Field(default="status", min_length=1)
    data_attr: str = Field(default="data", min_length=1)
    validation_key_attr: str = Field(default="validation", min_length=1)
    owner_token_attr: str = Field(default="owner_token", min_length=1)
    compressed_data_attr: str = Field(default="data_zlib", min_length=1)
    compress_threshold_bytes: int | None = Field(default=DEFAULT_COMPRESS_THRESHOLD_BYTES, ge=0)

    # Requests sent on every call, compiled once for this schema (lock_rules.prepared_requests).
    _prepared_requests: PreparedRequests | None = PrivateAttr(default=None)
    # The schema's own part of codec's bound on an item's size, kept with the schema
    # it was computed for (a copy with other names computes its own).
    _size_bound: tuple[TableSchema, int] | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _distinct_names(self) -> TableSchema:
        if self.sort_key_attr is not None and self.sort_key_attr == self.key_attr:
            raise ValueError(
                f"key_attr [{self.key_attr}] and sort_key_attr [{self.sort_key_attr}] "
                "cannot be the same"
            )
        names = [
            self.key_attr,
            self.sort_key_attr,
            self.expiry_attr,
            self.in_progress_expiry_attr,
            self.status_attr,
            self.data_attr,
            self.validation_key_attr,
            self.owner_token_attr,
            self.compressed_data_attr,
        ]
        present = [n for n in names if n is not None]
        if len(set(present)) != len(present):
            raise ValueError(f"attribute names must be distinct: {present}")
        return self

    @classmethod
    def build(cls, **kwargs: Any) -> TableSchema:
        """Construct from the options given (None means the default), turning validation
        failures into a configuration error."""
        options = {name: value for name, value in kwargs.items() if value is not None}
        try:
            return cls(**options)
        except ValidationError as exc:
            raise IdempotencyConfigurationError(str(exc)) from exc

    @classmethod
    def default(cls, name: str) -> Any:
        """The default of an option, e.g. ``TableSchema.default("key_attr")``."""
        return cls.model_fields[name].get_default(call_default_factory=True)

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
