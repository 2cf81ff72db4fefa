"""``IdempotencyConfig``: frozen, validated when built.

Option names and defaults are those of the Powertools idempotency utility;
``in_progress_lease_seconds``, ``wait_for_in_progress_seconds`` and ``clock``
are idemstore's own. One config may serve many decorated functions at once:
nothing is ever written into it after construction.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import jmespath
import jmespath.exceptions
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator

from idemstore.errors import IdempotencyConfigurationError
from idemstore.keys import CompatFunctions
from idemstore.records import DataRecord

Clock = Callable[[], float]
"""Returns the current time as epoch seconds."""

ResponseHook = Callable[[Any, DataRecord], Any]
"""Called with a replayed response and its record; returns the response to give."""


class IdempotencyConfig(BaseModel):
    """How idempotency keys are derived and records kept.

    Raises ``IdempotencyConfigurationError`` for an invalid value.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)

    event_key_jmespath: str = ""
    payload_validation_jmespath: str = ""
    jmespath_options: dict[str, Any] | None = None
    raise_on_no_idempotency_key: bool = False
    expires_after_seconds: int = Field(default=3600, gt=0)
    use_local_cache: bool = False
    local_cache_max_items: int = Field(default=256, gt=0)
    hash_function: str = "md5"
    response_hook: ResponseHook | None = None
    in_progress_lease_seconds: float = Field(default=60.0, gt=0)
    """Outside Lambda: how long a lock lasts; a heartbeat renews it while the function runs."""
    wait_for_in_progress_seconds: float = Field(default=0.0, ge=0)
    """0: a duplicate of a running call raises at once. More: it waits, then replays."""
    clock: Clock = time.time

    _event_key: Any = PrivateAttr(default=None)
    _validation_key: Any = PrivateAttr(default=None)
    _jmespath_options: jmespath.Options = PrivateAttr()

    if TYPE_CHECKING:
        # What type checkers see: every option with its type, with or without the
        # pydantic mypy plugin (whose own __init__ takes Any by default), so a misspelt
        # or mistyped option fails there. A test keeps these defaults equal to the fields'.
        def __init__(
            self,
            *,
            event_key_jmespath: str = "",
            payload_validation_jmespath: str = "",
            jmespath_options: dict[str, Any] | None = None,
            raise_on_no_idempotency_key: bool = False,
            expires_after_seconds: int = 3600,
            use_local_cache: bool = False,
            local_cache_max_items: int = 256,
            hash_function: str = "md5",
            response_hook: ResponseHook | None = None,
            in_progress_lease_seconds: float = 60.0,
            wait_for_in_progress_seconds: float = 0.0,
            clock: Clock = time.time,
        ) -> None: ...
    else:

        def __init__(self, **data: Any) -> None:
            # Any keyword reaches pydantic, so a misspelt option unseen by a type checker
            # is IdempotencyConfigurationError too, not Python's TypeError.
            try:
                super().__init__(**data)
            except ValidationError as exc:
                raise IdempotencyConfigurationError(str(exc)) from exc

    @field_validator("hash_function")
    @classmethod
    def _known_hash(cls, name: str) -> str:
        if name not in hashlib.algorithms_available or not callable(getattr(hashlib, name, None)):
            raise ValueError(f"unknown hash function {name!r}")
        try:
            getattr(hashlib, name)(b"").hexdigest()
        except TypeError as exc:
            # shake_* digests need a length, so no key could ever be made with them.
            raise ValueError(f"hash function {name!r} cannot make a fixed-size digest") from exc
        return name

    def model_post_init(self, context: Any, /) -> None:
        try:
            if self.event_key_jmespath:
                self._event_key = jmespath.compile(self.event_key_jmespath)
            if self.payload_validation_jmespath:
                self._validation_key = jmespath.compile(self.payload_validation_jmespath)
        except jmespath.exceptions.JMESPathError as exc:
            raise IdempotencyConfigurationError(f"invalid JMESPath expression: {exc}") from exc
        options = self.jmespath_options or {"custom_functions": CompatFunctions()}
        try:
            self._jmespath_options = jmespath.Options(**options)
        except TypeError as exc:
            raise IdempotencyConfigurationError(f"invalid jmespath_options: {exc}") from exc

    @property
    def payload_validation_enabled(self) -> bool:
        return self._validation_key is not None

    def extract_key_data(self, data: Any) -> Any:
        """The part of the payload the idempotency key is derived from."""
        if self._event_key is None:
            return data
        return self._event_key.search(data, options=self._jmespath_options)

    def extract_validation_data(self, data: Any) -> Any:
        return self._validation_key.search(data, options=self._jmespath_options)

    def register_lambda_context(self, lambda_context: Any) -> None:
        """Same as ``idemstore.register_lambda_context``; kept for code written against
        Powertools. Registers for the current task only: nothing is written into the config."""
        from idemstore.lambda_runtime import register_lambda_context

        register_lambda_context(lambda_context)
