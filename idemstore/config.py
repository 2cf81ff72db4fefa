"""``IdempotencyConfig``: frozen, validated when built.

Option names and defaults are those of the Powertools idempotency utility;
``in_progress_lease_seconds``, ``wait_for_in_progress_seconds`` and ``clock``
are idemstore's own. One config may serve many decorated functions at once:
nothing is ever written into it after construction.
"""

from __future__ import annotations

import functools
import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any

import jmespath
import jmespath.exceptions

from idemstore.errors import IdempotencyConfigurationError
from idemstore.keys import CompatFunctions
from idemstore.records import DataRecord

Clock = Callable[[], float]
"""Returns the current time as epoch seconds."""

ResponseHook = Callable[[Any, DataRecord], Any]
"""Called with a replayed response and its record; returns the response to give."""


def _unknown_options_are_configuration_errors(
    cls: type[IdempotencyConfig],
) -> type[IdempotencyConfig]:
    """An unknown option raises ``IdempotencyConfigurationError`` naming it, as every
    other mistake in a configuration does, rather than the call's ``TypeError``."""
    init = cls.__init__
    known = frozenset(option.name for option in fields(cls) if option.init)

    @functools.wraps(init)
    def checked_init(self: IdempotencyConfig, *args: Any, **options: Any) -> None:
        unknown = sorted(options.keys() - known)
        if unknown:
            raise IdempotencyConfigurationError(
                f"unknown option {', '.join(unknown)}; the options are {', '.join(sorted(known))}"
            )
        init(self, *args, **options)

    # Set outside the class body, so type checkers keep the dataclass's own signature.
    setattr(cls, "__init__", checked_init)  # noqa: B010  # an assignment mypy would refuse
    return cls


@_unknown_options_are_configuration_errors
@dataclass(frozen=True, slots=True, kw_only=True)
class IdempotencyConfig:
    """How idempotency keys are derived and records kept.

    Raises ``IdempotencyConfigurationError`` for an invalid value or an unknown
    option (and ``TypeError``, as any Python call does, for a positional one).
    """

    event_key_jmespath: str = ""
    payload_validation_jmespath: str = ""
    jmespath_options: dict[str, Any] | None = None
    raise_on_no_idempotency_key: bool = False
    expires_after_seconds: int = 3600
    use_local_cache: bool = False
    local_cache_max_items: int = 256
    hash_function: str = "md5"
    response_hook: ResponseHook | None = None
    in_progress_lease_seconds: float = 60.0
    """Outside Lambda: how long a lock lasts; a heartbeat renews it while the function runs."""
    wait_for_in_progress_seconds: float = 0.0
    """0: a duplicate of a running call raises at once. More: it waits, then replays."""
    clock: Clock = time.time

    # Compiled from the options when built: not options, outside equality.
    _event_key: Any = field(default=None, init=False, repr=False, compare=False)
    _validation_key: Any = field(default=None, init=False, repr=False, compare=False)
    _jmespath_options: jmespath.Options | None = field(
        default=None, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        # Plain checks instead of a validation library, which would cost a cold start
        # its import; each names the option.
        for name in ("event_key_jmespath", "payload_validation_jmespath", "hash_function"):
            _require(self, name, isinstance(getattr(self, name), str), "a string")
        for name in ("raise_on_no_idempotency_key", "use_local_cache"):
            _require(self, name, isinstance(getattr(self, name), bool), "True or False")
        for name in ("expires_after_seconds", "local_cache_max_items"):
            value = getattr(self, name)
            _require(self, name, _is_int(value) and value > 0, "an integer > 0")
        lease = self.in_progress_lease_seconds
        _require(self, "in_progress_lease_seconds", _is_number(lease) and lease > 0, "a number > 0")
        wait = self.wait_for_in_progress_seconds
        _require(
            self, "wait_for_in_progress_seconds", _is_number(wait) and wait >= 0, "a number >= 0"
        )
        _require(self, "jmespath_options", isinstance(self.jmespath_options, dict | None), "a dict")
        _require(
            self,
            "response_hook",
            self.response_hook is None or callable(self.response_hook),
            "a callable or None",
        )
        _require(self, "clock", callable(self.clock), "a callable")
        # Seconds are floats whichever number was given, as annotated.
        object.__setattr__(self, "in_progress_lease_seconds", float(lease))
        object.__setattr__(self, "wait_for_in_progress_seconds", float(wait))
        _check_hash(self.hash_function)
        try:
            if self.event_key_jmespath:
                object.__setattr__(self, "_event_key", jmespath.compile(self.event_key_jmespath))
            if self.payload_validation_jmespath:
                compiled = jmespath.compile(self.payload_validation_jmespath)
                object.__setattr__(self, "_validation_key", compiled)
        except jmespath.exceptions.JMESPathError as exc:
            raise IdempotencyConfigurationError(f"invalid JMESPath expression: {exc}") from exc
        options = self.jmespath_options or {"custom_functions": CompatFunctions()}
        try:
            object.__setattr__(self, "_jmespath_options", jmespath.Options(**options))
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


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _require(config: IdempotencyConfig, name: str, valid: bool, expected: str) -> None:
    if not valid:
        value = getattr(config, name)
        raise IdempotencyConfigurationError(f"{name} must be {expected}, not {value!r}")


def _check_hash(name: str) -> None:
    if name not in hashlib.algorithms_available or not callable(getattr(hashlib, name, None)):
        raise IdempotencyConfigurationError(f"hash_function: unknown hash function {name!r}")
    try:
        getattr(hashlib, name)(b"").hexdigest()
    except TypeError as exc:
        # shake_* digests need a length, so no key could ever be made with them.
        raise IdempotencyConfigurationError(
            f"hash_function: hash function {name!r} cannot make a fixed-size digest"
        ) from exc
