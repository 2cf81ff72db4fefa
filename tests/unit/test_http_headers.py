"""The HTTP integrations' pure parts: the ``Idempotency-Key`` header, configuration,
identity, stored responses, header filtering, problem documents; and that importing
idemstore imports no web framework. (Outcomes and errors to answers: test_http_answers.py.)"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from idemstore import IdempotencyConfig, IdempotencyConfigurationError, InMemoryStore
from idemstore.codec import RESULT_LIMIT_BYTES
from idemstore.errors import IdempotencySerializationError
from idemstore.integrations._http import (
    CapturedResponse,
    HttpIdempotencyConfig,
    InvalidIdempotencyKeyError,
    Problem,
    StatusSet,
    build_engine,
    call_identity,
    key_data,
    parse_idempotency_key,
    replay_headers,
    request_fingerprint,
    storable_headers,
    stored_by_default,
)
from idemstore.outcome import CallIdentity

# --- the header ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "key"),
    [
        ("abc", "abc"),
        ("8e03978e-40d5-43e8-bc93-6894a57f9324", "8e03978e-40d5-43e8-bc93-6894a57f9324"),
        ("  padded\t", "padded"),
        ("base64+/=:;!~", "base64+/=:;!~"),
        ('"abc"', "abc"),
        ('"with space"', "with space"),
        ('"a \\"quoted\\" \\\\ word"', 'a "quoted" \\ word'),
        ('"' + "k" * 255 + '"', "k" * 255),
        ("k" * 255, "k" * 255),
    ],
)
def test_valid_keys_are_parsed(value: str, key: str) -> None:
    assert parse_idempotency_key([value]) == key


@pytest.mark.parametrize(
    "value",
    [
        "",
        '""',
        "k" * 256,
        '"' + "k" * 256 + '"',
        "two words",
        "a,b",
        'ab"c',
        "back\\slash",
        "caf\u00e9",
        "tab\tinside",
        '"unclosed',
        '"text"after',
        '"bad \\n escape"',
        '"dangling\\"',
        '"caf\u00e9"',
        '"line\x7f"',
        '"new\nline"',
    ],
)
def test_invalid_keys_are_refused(value: str) -> None:
    with pytest.raises(InvalidIdempotencyKeyError):
        parse_idempotency_key([value])


def test_an_absent_header_is_no_key() -> None:
    assert parse_idempotency_key([]) is None


def test_two_headers_are_refused() -> None:
    with pytest.raises(InvalidIdempotencyKeyError, match="more than one"):
        parse_idempotency_key(["a", "a"])


# --- configuration -------------------------------------------------------------------


def test_defaults() -> None:
    config = HttpIdempotencyConfig()
    assert config.methods == {"POST", "PATCH"}
    assert config.guards("post")
    assert config.guards("PATCH")
    assert not config.guards("GET")
    assert not config.require_key
    assert config.scope is None
    assert config.header_denylist == {"set-cookie"}
    assert config.key_prefix == "http"
    assert not config.fail_open
    assert config.unstorable_responses == "record"
    # A body is held only if it could fit in an item as it is.
    assert config.max_capture_bytes == RESULT_LIMIT_BYTES
    assert [s for s in (200, 201, 303, 400, 404, 409, 422, 429, 500, 503) if config.stores(s)] == [
        200,
        201,
        303,
        400,
        404,
        409,
        422,
    ]


def test_values_are_normalised() -> None:
    config = HttpIdempotencyConfig(methods=["put", "Delete"], header_denylist=["X-Secret"])
    assert config.methods == {"PUT", "DELETE"}
    assert config.header_denylist == {"x-secret"}


@pytest.mark.parametrize(
    ("statuses", "stored", "unstored"),
    [
        (range(200, 300), [200, 299], [300, 404]),
        ([range(200, 300), 404], [201, 404], [400, 500]),
        (201, [201], [200]),
        (lambda status: status == 418, [418], [200]),
    ],
)
def test_stored_statuses_take_predicates_codes_and_ranges(
    statuses: Any, stored: list[int], unstored: list[int]
) -> None:
    config = HttpIdempotencyConfig(stored_statuses=statuses)
    assert all(config.stores(status) for status in stored)
    assert not any(config.stores(status) for status in unstored)


@pytest.mark.parametrize(
    "options",
    [
        {"methods": []},
        {"methods": "POST"},
        {"methods": ["PO ST"]},
        {"header_denylist": "set-cookie"},
        {"stored_statuses": ["2xx"]},
        {"stored_statuses": "200"},
        {"max_capture_bytes": 0},
        {"key_prefix": ""},
        {"retry_after_seconds": -1},
        {"unstorable_responses": "drop"},
        {"unknown_option": True},
        {"idempotency_config": IdempotencyConfig(event_key_jmespath="body")},
        {"idempotency_config": IdempotencyConfig(payload_validation_jmespath="body")},
    ],
)
def test_invalid_configuration_is_refused_at_construction(options: dict[str, Any]) -> None:
    with pytest.raises(IdempotencyConfigurationError):
        HttpIdempotencyConfig(**options)


def test_configuration_is_frozen() -> None:
    config = HttpIdempotencyConfig()
    with pytest.raises(ValueError, match="frozen"):
        config.require_key = True  # type: ignore[misc]  # the assignment under test is refused


def test_status_set_and_default_predicate() -> None:
    assert StatusSet.of(range(200, 204), 410)(203)
    assert not StatusSet.of(range(200, 204), 410)(204)
    assert stored_by_default(499)
    assert not stored_by_default(429)


# --- identity ---------------------------------------------------------------------------


def test_the_fingerprint_covers_method_path_query_and_body() -> None:
    base = request_fingerprint("post", "/orders", "a=1", b"{}")
    assert base["method"] == "POST"
    variants = [
        request_fingerprint("PATCH", "/orders", "a=1", b"{}"),
        request_fingerprint("POST", "/orders/1", "a=1", b"{}"),
        request_fingerprint("POST", "/orders", "a=2", b"{}"),
        request_fingerprint("POST", "/orders", "a=1", b"{ }"),
    ]
    assert all(variant != base for variant in variants)


def identity(
    key: str,
    scope: str | None,
    fingerprint: dict[str, str],
    config: HttpIdempotencyConfig | None = None,
) -> CallIdentity:
    config = config or HttpIdempotencyConfig()
    return call_identity(config, key=key, scope=scope, fingerprint=fingerprint)


def test_the_key_depends_on_scope_and_header_and_the_hash_on_the_fingerprint() -> None:
    fingerprint = request_fingerprint("POST", "/orders", "", b"")
    plain = identity("k", None, fingerprint)
    assert plain.key.startswith("http#")
    assert plain == identity("k", None, fingerprint)
    tenant = identity("k", "acme", fingerprint)
    other_key = identity("k2", None, fingerprint)
    assert len({plain.key, tenant.key, other_key.key}) == 3
    other_request = identity("k", None, request_fingerprint("POST", "/x", "", b""))
    assert other_request.key == plain.key
    assert other_request.payload_hash != plain.payload_hash
    prefixed = identity("k", None, fingerprint, HttpIdempotencyConfig(key_prefix="payments"))
    assert prefixed.key.startswith("payments#")


def test_keys_and_hashes_are_those_of_records_already_stored() -> None:
    """Derived by the engine now, by the middleware before: the same records must match."""
    engine = build_engine(InMemoryStore(), HttpIdempotencyConfig())
    fingerprint = request_fingerprint("POST", "/orders", "", b"{}")
    assert engine.identity_of(key_data("k", None), fingerprint) == CallIdentity(
        "http#1cf5f94c0c57933da4369036a77d6b47", "dba3cd32741fea05d5a5de0bb9a992c3"
    )
    assert identity("k", None, fingerprint) == engine.identity_of(key_data("k", None), fingerprint)
    assert identity("k", "acme", fingerprint).key == "http#c9c1d9c02d212537edf48666f8f2b98b"


# --- stored responses and headers ---------------------------------------------------------


def test_a_captured_response_round_trips_through_json() -> None:
    response = CapturedResponse(201, (("Content-Type", "image/png"),), bytes(range(256)))
    stored = json.loads(json.dumps(response.to_stored()))
    assert CapturedResponse.from_stored(stored) == response


@pytest.mark.parametrize(
    "stored",
    [
        None,
        {},
        {"status": 200, "headers": [], "body": "not base64!"},
        {"status": "200", "headers": [], "body": ""},
        {"status": 42, "headers": [], "body": ""},
        {"status": 200, "headers": [["only-a-name"]], "body": ""},
    ],
)
def test_a_malformed_stored_response_is_a_serialization_error(stored: Any) -> None:
    with pytest.raises(IdempotencySerializationError):
        CapturedResponse.from_stored(stored)


def test_hop_by_hop_length_and_denied_headers_are_not_stored() -> None:
    headers = [
        ("Content-Type", "text/plain"),
        ("Content-Length", "5"),
        ("Transfer-Encoding", "chunked"),
        ("Connection", "keep-alive, X-Hop"),
        ("X-Hop", "1"),
        ("Keep-Alive", "timeout=5"),
        ("Set-Cookie", "session=1"),
        ("X-Secret", "s"),
        ("X-Order", "7"),
    ]
    kept = storable_headers(headers, frozenset({"set-cookie", "x-secret"}))
    assert kept == (("Content-Type", "text/plain"), ("X-Order", "7"))


def test_replay_headers_filter_again_and_mark_the_replay() -> None:
    stored = CapturedResponse(200, (("set-cookie", "a=1"), ("x-order", "7")), b"")
    assert replay_headers(stored, frozenset({"set-cookie"})) == [
        ("x-order", "7"),
        ("Idempotent-Replayed", "true"),
    ]


# --- problems ------------------------------------------------------------------------------


def test_a_problem_is_an_rfc_9457_document() -> None:
    problem = Problem(409, "busy", (("Retry-After", "2"),))
    assert json.loads(problem.body()) == {
        "type": "about:blank",
        "title": "Conflict",
        "status": 409,
        "detail": "busy",
    }
    assert problem.response_headers() == [
        ("Content-Type", "application/problem+json"),
        ("Retry-After", "2"),
    ]


# --- the package stays framework-free ----------------------------------------------------------


def test_importing_idemstore_imports_no_web_framework() -> None:
    check = (
        "import sys, idemstore, idemstore.integrations, idemstore.integrations._http\n"
        "loaded = [m for m in ('fastapi', 'starlette', 'aiohttp.web', 'uvicorn') "
        "if m in sys.modules]\n"
        "assert not loaded, loaded\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", check], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
