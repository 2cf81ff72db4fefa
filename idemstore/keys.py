"""Idempotency keys and payload hashes, byte-compatible with Powertools.

A key is ``{prefix}#{hexdigest}``; the digest is
``hashlib.<hash_function>(json.dumps(data, sort_keys=True, <encoder>))`` where
the encoder turns Decimal, pydantic models, dataclasses, Enum, date/time,
UUID and paths into JSON the same way the Powertools utility does, so the
same payload maps to the same record in both libraries.

Pure: the environment (the Lambda function name) is passed in by the caller.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import gzip
import hashlib
import json
import math
from collections.abc import Callable
from decimal import Decimal
from enum import Enum
from pathlib import PurePath
from typing import Any
from uuid import UUID

import jmespath
import jmespath.functions
from jmespath.parser import ParsedResult

DEFAULT_FUNCTION_NAME = "test-func"
"""The prefix's first part outside Lambda, as in Powertools."""


class PayloadEncoder(json.JSONEncoder):
    """JSON encoder for payloads and results; the Powertools encoding, extended the same way."""

    def default(self, o: Any) -> Any:
        if isinstance(o, Decimal):
            return math.nan if o.is_nan() else str(o)
        if callable(getattr(o, "model_dump", None)) and hasattr(type(o), "model_fields"):
            return o.model_dump(mode="json")
        if dataclasses.is_dataclass(o) and not isinstance(o, type):
            return dataclasses.asdict(o)
        if isinstance(o, Enum):
            return o.value
        if isinstance(o, dt.date | dt.time):
            return o.isoformat()
        if isinstance(o, UUID | PurePath):
            return str(o)
        return super().default(o)


_CANONICAL_ENCODER = PayloadEncoder(sort_keys=True)
"""What ``json.dumps(data, cls=PayloadEncoder, sort_keys=True)`` builds on every call;
an encoder keeps no state between calls, so one serves them all."""


def to_json_data(data: Any) -> Any:
    """The JSON-shaped form of a payload (models and dataclasses become dicts, event
    data classes the event they wrap)."""
    if isinstance(data, dict | list | str | int | float | bool) or data is None:
        return data
    if callable(getattr(data, "model_dump", None)) and hasattr(type(data), "model_fields"):
        return data.model_dump(mode="json")
    if dataclasses.is_dataclass(data) and not isinstance(data, type):
        return dataclasses.asdict(data)
    # Event data classes (Powertools' SQSRecord, ...) wrap the event they were built
    # from: key on that event, as Powertools does, so both derive the same key.
    raw_event = getattr(data, "raw_event", None)
    if raw_event is not None and not isinstance(data, type):
        return raw_event
    return data


def canonical_json(data: Any) -> str:
    """``json.dumps`` with sorted keys and the payload encoder."""
    return _CANONICAL_ENCODER.encode(data)


def hash_data(data: Any, hash_function: str) -> str:
    digest: Callable[[bytes], Any] = getattr(hashlib, hash_function)
    return str(digest(canonical_json(data).encode()).hexdigest())


def key_prefix(function_name: str | None, module: str, qualname: str) -> str:
    """The default prefix: ``{lambda function name or test-func}.{module}.{qualname}``.

    Only an unset name (None) becomes ``test-func``; a name set but empty stays
    empty, exactly as in Powertools, so both libraries derive the same key.
    """
    name = DEFAULT_FUNCTION_NAME if function_name is None else function_name
    return f"{name}.{module}.{qualname}"


def is_missing_key(data: Any) -> bool:
    """Whether extracted key data counts as absent (None, empty, all-None)."""
    if isinstance(data, dict):
        return all(value is None for value in data.values())
    if isinstance(data, list | tuple):
        return all(value is None for value in data)
    if isinstance(data, int | float | bool):
        return False
    return not data


def make_key(prefix: str, data: Any, hash_function: str) -> str:
    return f"{prefix}#{hash_data(data, hash_function)}"


class CompatFunctions(jmespath.functions.Functions):
    """JMESPath functions that existing event-key expressions use.

    ``powertools_json(body)`` parses a JSON string, ``powertools_base64`` decodes
    base64 text, ``powertools_base64_gzip`` decodes and gunzips: the names are
    kept so expressions written for the Powertools utility work unchanged.
    """

    @jmespath.functions.signature({"types": ["string"]})
    def _func_powertools_json(self, value: str) -> Any:
        return json.loads(value)

    @jmespath.functions.signature({"types": ["string"]})
    def _func_powertools_base64(self, value: str) -> str:
        return base64.b64decode(value).decode()

    @jmespath.functions.signature({"types": ["string"]})
    def _func_powertools_base64_gzip(self, value: str) -> str:
        return gzip.decompress(base64.b64decode(value)).decode()


def compile_jmespath(expression: str) -> ParsedResult:
    return jmespath.compile(expression)


def search(expression: ParsedResult, data: Any, options: jmespath.Options) -> Any:
    return expression.search(data, options=options)
