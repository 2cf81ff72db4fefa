"""The ``idemstore`` command line: create the table, compute keys, inspect and release records.

Parsing and formatting are pure functions of their arguments (the environment
and the clock are passed in); each command that talks to DynamoDB is one
coroutine, run with ``asyncio.run`` on a store closed when it ends.

Errors are one line on stderr, never a traceback: exit code 2 for a bad
invocation (arguments, JSON, JMESPath), 1 for a failure while running. A
missing region is a failure while running (1): botocore may still find one in
the AWS config profile, which only the client creation reads.

Only the script entry point imports this module (``import idemstore`` does not).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import hashlib
import json
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any, NoReturn, TypeVar
from urllib.parse import urlsplit

from botocore.exceptions import NoCredentialsError, NoRegionError
from pydantic import ValidationError

from idemstore import __version__, keys
from idemstore.config import IdempotencyConfig
from idemstore.engine import IdempotencyEngine
from idemstore.errors import (
    IdempotencyConfigurationError,
    IdempotencyError,
    IdempotencyItemNotFoundError,
    IdempotencyKeyError,
)
from idemstore.integrations._http import (
    HttpIdempotencyConfig,
    InvalidIdempotencyKeyError,
    call_identity,
    parse_idempotency_key,
    request_fingerprint,
)
from idemstore.lock_rules import lock_available
from idemstore.records import DataRecord, RecordStatus
from idemstore.stores.dynamo import AsyncDynamoStore
from idemstore.stores.memory import InMemoryStore
from idemstore.table import STATIC_PK_PREFIX, TableSchema, default_static_pk_value
from idemstore.tables import TableSetup, ensure_table

PROG = "idemstore"
EXIT_RUNTIME = 1
EXIT_USAGE = 2
# botocore's own variables, in its order of precedence; the library reads them
# through botocore, the CLI reads them itself to name a bad one in its error.
ENDPOINT_ENVS = ("AWS_ENDPOINT_URL_DYNAMODB", "AWS_ENDPOINT_URL")
IGNORE_ENDPOINTS_ENV = "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS"
REGION_ENVS = ("AWS_REGION", "AWS_DEFAULT_REGION")
FUNCTION_NAME_ENV = "AWS_LAMBDA_FUNCTION_NAME"
# shake_* digests need a length, which the key format has no place for.
HASH_FUNCTIONS = sorted(n for n in hashlib.algorithms_guaranteed if not n.startswith("shake"))
DEFAULT_HASH_FUNCTION = str(
    next(f.default for f in fields(IdempotencyConfig) if f.name == "hash_function")
)
DEFAULT_HTTP_KEY_PREFIX = str(HttpIdempotencyConfig.model_fields["key_prefix"].default)
RESULT_PREVIEW_CHARS = 200


def _schema_default(name: str) -> str:
    """An attribute name's default, from the one place defaults are written."""
    return str(TableSchema.default(name))


DEFAULT_KEY_ATTR = _schema_default("key_attr")
DEFAULT_EXPIRY_ATTR = _schema_default("expiry_attr")

_T = TypeVar("_T")
_R = TypeVar("_R")


class UsageError(Exception):
    """The invocation itself is wrong; exit code 2."""


class CommandError(Exception):
    """The command ran and could not do what was asked; exit code 1."""


# --- parsing ------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: the usage text is behind ``--help``."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


@dataclass(frozen=True)
class Connection:
    """Where the table is: flags first, then the environment."""

    endpoint_url: str | None
    region_name: str | None


@dataclass(frozen=True)
class TableLayout:
    """The table's name and the attribute names that locate a record."""

    table_name: str
    key_attr: str = DEFAULT_KEY_ATTR
    sort_key_attr: str | None = None
    static_pk_value: str | None = None
    expiry_attr: str = DEFAULT_EXPIRY_ATTR

    def store(self, connection: Connection) -> AsyncDynamoStore:
        """A store on this table (no I/O); bad attribute names are a usage error."""
        try:
            return AsyncDynamoStore(
                self.table_name,
                key_attr=self.key_attr,
                sort_key_attr=self.sort_key_attr,
                static_pk_value=self.static_pk_value,
                expiry_attr=self.expiry_attr,
                endpoint_url=connection.endpoint_url,
                region_name=connection.region_name,
            )
        except IdempotencyConfigurationError as exc:
            raise UsageError(error_message(exc)) from exc


def endpoint_url(text: str) -> str:
    """An argparse type: an http(s) URL with a host."""
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise argparse.ArgumentTypeError(f"not an http(s) URL: {text!r}")
    return text


def configured_endpoint(environ: Mapping[str, str]) -> tuple[str, str] | None:
    """The endpoint botocore would take from the environment, with the variable naming it."""
    if environ.get(IGNORE_ENDPOINTS_ENV, "").strip().lower() == "true":
        return None
    return next(((n, environ[n]) for n in ENDPOINT_ENVS if environ.get(n)), None)


def connection_from(args: argparse.Namespace, environ: Mapping[str, str]) -> Connection:
    url = args.endpoint_url
    configured = configured_endpoint(environ)
    if url is None and configured is not None:
        variable, url = configured
        try:
            url = endpoint_url(url)
        except argparse.ArgumentTypeError as exc:
            raise UsageError(f"{variable}: {exc}") from exc
    region = args.region or next((environ[n] for n in REGION_ENVS if environ.get(n)), None)
    return Connection(endpoint_url=url, region_name=region)


def static_pk_value_from(args: argparse.Namespace, environ: Mapping[str, str]) -> str | None:
    """The partition value in sort-key mode: as given, else derived as the store derives it."""
    static_pk_value: str | None = getattr(args, "static_pk_value", None)
    function_name: str | None = getattr(args, "function_name", None)
    flags = {"--static-pk-value": static_pk_value, "--function-name": function_name}
    given = [flag for flag, value in flags.items() if value is not None]
    if len(given) == 2:
        raise UsageError("--static-pk-value and --function-name exclude each other")
    if given and args.sort_key is None:
        raise UsageError(f"{given[0]} needs --sort-key")
    if args.sort_key is None or static_pk_value is not None:
        return static_pk_value
    if function_name is None:
        function_name = environ.get(FUNCTION_NAME_ENV)
    return default_static_pk_value(function_name)


def layout_from(args: argparse.Namespace, environ: Mapping[str, str]) -> TableLayout:
    static_pk_value = static_pk_value_from(args, environ)
    return TableLayout(
        table_name=args.table,
        key_attr=args.key_attr,
        sort_key_attr=args.sort_key,
        static_pk_value=static_pk_value,
        expiry_attr=args.expiry_attr,
    )


def build_parser() -> argparse.ArgumentParser:
    connection = _Parser(add_help=False)
    connection.add_argument(
        "--endpoint-url",
        type=endpoint_url,
        metavar="URL",
        help=f"DynamoDB endpoint (default: ${ENDPOINT_ENVS[0]}, else ${ENDPOINT_ENVS[1]}, "
        "else AWS's)",
    )
    connection.add_argument(
        "--region", metavar="R", help="AWS region (default: $AWS_REGION, else $AWS_DEFAULT_REGION)"
    )
    layout = _Parser(add_help=False)
    layout.add_argument(
        "--key-attr",
        default=DEFAULT_KEY_ATTR,
        metavar="ATTR",
        help=f"partition key attribute (default: {DEFAULT_KEY_ATTR})",
    )
    layout.add_argument("--sort-key", metavar="ATTR", help="sort key attribute (sort-key mode)")
    layout.add_argument(
        "--expiry-attr",
        default=DEFAULT_EXPIRY_ATTR,
        metavar="ATTR",
        help=f"TTL attribute (default: {DEFAULT_EXPIRY_ATTR})",
    )
    record = _Parser(add_help=False)
    record.add_argument("key", metavar="KEY", help="the idempotency key")
    record.add_argument("--table", required=True, metavar="T", help="table name")
    record.add_argument(
        "--static-pk-value",
        metavar="V",
        help=f"partition value in sort-key mode (default: {STATIC_PK_PREFIX}FUNCTION)",
    )
    record.add_argument(
        "--function-name",
        metavar="F",
        help=f"sort-key mode: the Lambda function the partition value {STATIC_PK_PREFIX}F "
        f"is derived from (default: ${FUNCTION_NAME_ENV}, else empty)",
    )

    parser = _Parser(prog=PROG, description="Manage idemstore idempotency tables and records.")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    create = commands.add_parser(
        "create-table",
        parents=[layout, connection],
        help="create the idempotency table (idempotent)",
        description="Create an on-demand table with TTL on the expiry attribute. "
        "An existing table is checked: a different key schema or TTL attribute is an "
        "error (exit 1); TTL that is off is enabled.",
    )
    create.add_argument("table", metavar="NAME", help="table name")
    create.set_defaults(handler=_create_table)

    key = commands.add_parser(
        "key",
        help="print the idempotency key a payload maps to",
        description="Print the idempotency key for a payload, as the decorated function "
        "(or a Powertools-decorated one) computes it. No AWS access.",
    )
    key.add_argument(
        "--function-name",
        metavar="F",
        help=f"Lambda function name (default: ${FUNCTION_NAME_ENV}, "
        f"else {keys.DEFAULT_FUNCTION_NAME})",
    )
    key.add_argument("--module", metavar="M", help="the decorated function's __module__")
    key.add_argument("--qualname", metavar="Q", help="the decorated function's __qualname__")
    key.add_argument(
        "--payload", required=True, metavar="JSON", help="the payload as JSON text, or - for stdin"
    )
    key.add_argument(
        "--jmespath", metavar="EXPR", help="expression selecting the key data from the payload"
    )
    _add_hash_function(key)
    key.add_argument(
        "--key-prefix", metavar="P", help="custom key prefix (replaces function.module.qualname)"
    )
    key.set_defaults(handler=_key)

    http_key = commands.add_parser(
        "http-key",
        help="print the record key of an HTTP request (Idempotency-Key header)",
        description="Print the record key the HTTP middleware stores a request under, "
        "from its Idempotency-Key header and scope. With --method and --path (and "
        "--query, --body-file), also print the request's payload hash, the fingerprint "
        "a retry must match. No AWS access.",
    )
    http_key.add_argument(
        "--key",
        required=True,
        metavar="K",
        help="the Idempotency-Key header's value (a bare token or a quoted string)",
    )
    http_key.add_argument(
        "--scope", metavar="S", help="what the configured scope callable returns (default: none)"
    )
    http_key.add_argument(
        "--prefix",
        "--key-prefix",
        dest="prefix",
        default=DEFAULT_HTTP_KEY_PREFIX,
        metavar="P",
        help=f"HttpIdempotencyConfig.key_prefix (default: {DEFAULT_HTTP_KEY_PREFIX})",
    )
    _add_hash_function(http_key)
    http_key.add_argument("--method", metavar="M", help="the request method, e.g. POST")
    http_key.add_argument(
        "--path", metavar="P", help="the request path as the server sees it, without the query"
    )
    http_key.add_argument(
        "--query",
        default="",
        metavar="Q",
        help="the query string as the framework gives it, without '?' (default: empty)",
    )
    http_key.add_argument(
        "--body-file",
        metavar="FILE",
        help="a file holding the request body, or - for stdin (default: empty body)",
    )
    http_key.set_defaults(handler=_http_key)

    inspect = commands.add_parser(
        "inspect",
        parents=[record, layout, connection],
        help="show a record",
        description="Show a record: status (EXPIRED derived from the current time), "
        "expiries, payload hash, owner token, and the stored result (a preview; "
        "--json has all of it).",
    )
    inspect.add_argument("--json", action="store_true", help="machine-readable output")
    inspect.set_defaults(handler=_inspect)

    release = commands.add_parser(
        "release",
        parents=[record, layout, connection],
        help="release a stuck INPROGRESS record",
        description="Delete a stuck INPROGRESS record, fenced on its owner token so a "
        "concurrent change is not clobbered. An expired record is no lock: it is left "
        "for the next call to take over, and the command succeeds.",
    )
    release.add_argument(
        "--force",
        action="store_true",
        help="also delete a COMPLETED or expired record, or one without owner token "
        "(unconditionally)",
    )
    release.set_defaults(handler=_release)
    return parser


def _add_hash_function(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--hash-function",
        "--hash",
        dest="hash",
        default=DEFAULT_HASH_FUNCTION,
        choices=HASH_FUNCTIONS,
        metavar="NAME",
        help=f"hashlib function: {', '.join(HASH_FUNCTIONS)} (default: {DEFAULT_HASH_FUNCTION})",
    )


# --- key ------------------------------------------------------------------------


def parse_payload(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"--payload is not valid JSON: {exc}") from exc


def idempotency_key(
    payload: Any, *, prefix: str, expression: str | None, hash_function: str
) -> str:
    """The key a decorated function derives for the payload: the engine's own identity,
    so the command line and the library cannot disagree."""
    try:
        config = IdempotencyConfig(
            event_key_jmespath=expression or "",
            hash_function=hash_function,
            raise_on_no_idempotency_key=True,
        )
    except IdempotencyConfigurationError as exc:
        # The message says it all; the chained validation error would replace it.
        raise UsageError(f"bad JMESPath expression {expression!r}: {error_message(exc)}") from None
    engine = IdempotencyEngine(InMemoryStore(), config, key_prefix=prefix)
    try:
        identity = engine.identify(payload)
    except IdempotencyKeyError as exc:
        if exc.__cause__ is not None:  # the expression's functions failed on this payload
            raise UsageError(
                f"JMESPath expression {expression!r} failed on the payload: "
                f"{error_message(exc.__cause__)}"
            ) from exc
        selected = json.dumps(config.extract_key_data(payload)) if expression else None
        where = f"JMESPath {expression!r} selected {selected}" if expression else "empty"
        raise CommandError(f"no idempotency key data in the payload ({where})") from exc
    assert identity is not None  # raise_on_no_idempotency_key: never None
    return identity.key


def key_prefix_from(args: argparse.Namespace, environ: Mapping[str, str]) -> str:
    if args.key_prefix:
        return str(args.key_prefix)
    flags = (("--module", args.module), ("--qualname", args.qualname))
    missing = [flag for flag, value in flags if not value]
    if missing:
        raise UsageError(f"{' and '.join(missing)} required unless --key-prefix is given")
    function_name = args.function_name or environ.get(FUNCTION_NAME_ENV)
    return keys.key_prefix(function_name, args.module, args.qualname)


def _key(args: argparse.Namespace, environ: Mapping[str, str]) -> str:
    prefix = key_prefix_from(args, environ)
    text = sys.stdin.read() if args.payload == "-" else args.payload
    return idempotency_key(
        parse_payload(text), prefix=prefix, expression=args.jmespath, hash_function=args.hash
    )


# --- http-key ---------------------------------------------------------------------


@dataclass(frozen=True)
class HttpRequest:
    """What an HTTP request's fingerprint is made of."""

    method: str
    path: str
    query: str
    body: bytes


def http_identity(
    header_value: str,
    *,
    scope: str | None,
    prefix: str,
    hash_function: str,
    request: HttpRequest | None,
) -> tuple[str, str | None]:
    """The record key, and the payload hash of the request if given, as the middleware derives them.

    The middleware's own functions derive them, so the two cannot drift apart.
    """
    if not prefix:
        raise UsageError("--prefix must not be empty")
    try:
        key = parse_idempotency_key([header_value])
        config = HttpIdempotencyConfig(
            key_prefix=prefix, idempotency_config=IdempotencyConfig(hash_function=hash_function)
        )
    except (InvalidIdempotencyKeyError, IdempotencyConfigurationError) as exc:
        raise UsageError(error_message(exc)) from exc
    assert key is not None  # one header value always parses to a key or raises
    request = request or HttpRequest("", "", "", b"")
    fingerprint = request_fingerprint(request.method, request.path, request.query, request.body)
    identity = call_identity(config, key=key, scope=scope, fingerprint=fingerprint)
    return identity.key, identity.payload_hash if request.method else None


def http_request_from(args: argparse.Namespace) -> HttpRequest | None:
    if args.method is None and args.path is None and not args.query and args.body_file is None:
        return None
    if args.method is None or args.path is None:
        raise UsageError("a request fingerprint needs --method and --path")
    if "?" in args.path:
        raise UsageError("--path holds a query; pass it with --query")
    return HttpRequest(
        method=args.method,
        path=args.path,
        query=args.query.removeprefix("?"),
        body=_read_body(args.body_file),
    )


def _read_body(path: str | None) -> bytes:
    if path is None:
        return b""
    if path == "-":
        return sys.stdin.buffer.read()
    try:
        with open(path, "rb") as file:
            return file.read()
    except OSError as exc:
        raise UsageError(f"--body-file {path!r}: {exc.strerror}") from exc


def _http_key(args: argparse.Namespace, environ: Mapping[str, str]) -> str:
    key, payload_hash = http_identity(
        args.key,
        scope=args.scope,
        prefix=args.prefix,
        hash_function=args.hash,
        request=http_request_from(args),
    )
    if payload_hash is None:
        return key
    return f"key:          {key}\npayload hash: {payload_hash}"


# --- formatting -------------------------------------------------------------------


def iso_utc(epoch_seconds: float, *, milliseconds: bool = False) -> str:
    moment = dt.datetime.fromtimestamp(epoch_seconds, tz=dt.UTC)
    text = moment.isoformat(timespec="milliseconds" if milliseconds else "seconds")
    return text.replace("+00:00", "Z")


def relative_time(delta_seconds: float) -> str:
    """``in 5m`` for a moment ahead, ``3m ago`` for one past, in the largest whole unit."""
    magnitude = abs(int(delta_seconds))
    if magnitude == 0:
        return "now"
    unit, size = next(
        (u, s) for u, s in (("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)) if magnitude >= s
    )
    amount = f"{magnitude // size}{unit}"
    return f"in {amount}" if delta_seconds > 0 else f"{amount} ago"


def describe_record(record: DataRecord, now: float) -> dict[str, Any]:
    """A record as plain data for display; times absolute (UTC) and relative to ``now``."""
    in_progress_ms = record.in_progress_expiry_timestamp
    in_progress_s = None if in_progress_ms is None else in_progress_ms / 1000
    result = record.response_data
    return {
        "key": record.idempotency_key,
        "status": record.status_at(now).value,
        "stored_status": record.status.value,
        "expiry_timestamp": record.expiry_timestamp,
        "expiry": iso_utc(record.expiry_timestamp),
        "expiry_relative": relative_time(record.expiry_timestamp - now),
        "in_progress_expiry_timestamp": in_progress_ms,
        "in_progress_expiry": _maybe(in_progress_s, lambda s: iso_utc(s, milliseconds=True)),
        "in_progress_expiry_relative": _maybe(in_progress_s, lambda s: relative_time(s - now)),
        "lock_available": lock_available(record, now),
        "payload_hash": record.payload_hash,
        "owner_token": record.owner_token,
        "result_size_bytes": _maybe(result, lambda text: len(text.encode())),
        "result": result,
    }


def _maybe(value: _T | None, convert: Callable[[_T], _R]) -> _R | None:
    return None if value is None else convert(value)


def result_preview(text: str, limit: int = RESULT_PREVIEW_CHARS) -> str:
    """The stored result on one line, cut after ``limit`` characters."""
    one_line = text.replace("\r", "\\r").replace("\n", "\\n")
    if len(one_line) <= limit:
        return one_line
    return f"{one_line[:limit]}... ({len(one_line) - limit} more characters; --json shows all)"


def format_record(description: Mapping[str, Any]) -> str:
    d = description
    status = d["status"]
    if status != d["stored_status"]:
        status = f"{status} (stored: {d['stored_status']})"
    in_progress = "-"
    if d["in_progress_expiry"] is not None:
        in_progress = f"{d['in_progress_expiry']} ({d['in_progress_expiry_relative']})"
    size = d["result_size_bytes"]
    rows = [
        ("key", d["key"]),
        ("status", status),
        ("expiry", f"{d['expiry']} ({d['expiry_relative']})"),
        ("in-progress expiry", in_progress),
        ("lock available", "yes" if d["lock_available"] else "no"),
        ("payload hash", d["payload_hash"] or "-"),
        ("owner token", d["owner_token"] or "-"),
        ("result size", "-" if size is None else f"{size} bytes"),
        ("result", "-" if d["result"] is None else result_preview(d["result"])),
    ]
    width = max(len(label) for label, _ in rows) + 1
    return "\n".join(f"{label + ':':<{width}} {value}" for label, value in rows)


# --- commands that talk to DynamoDB ---------------------------------------------


async def create_table_command(layout: TableLayout, connection: Connection) -> str:
    async with layout.store(connection) as store:
        setup = await ensure_table(store)
    done = f"{'created' if setup is TableSetup.CREATED else 'already exists'}: table "
    done += repr(layout.table_name)
    if setup is TableSetup.TTL_ENABLED:
        done += f" (its TTL was off; now enabled on {layout.expiry_attr!r})"
    return done


async def inspect_command(
    key: str,
    layout: TableLayout,
    connection: Connection,
    *,
    as_json: bool,
    clock: Callable[[], float] = time.time,
) -> str:
    async with layout.store(connection) as store:
        record = await _get_record(store, key)
    description = describe_record(record, clock())
    return json.dumps(description, indent=2) if as_json else format_record(description)


async def release_command(
    key: str,
    layout: TableLayout,
    connection: Connection,
    *,
    force: bool,
    clock: Callable[[], float] = time.time,
) -> str:
    async with layout.store(connection) as store:
        record = await _get_record(store, key)
        status = record.status.value
        now = clock()
        if record.is_expired(now) and not force:
            # Not a lock: the next call takes it over; a delete here could race that call.
            return (
                f"nothing to release: {status} record {key!r} expired "
                f"{relative_time(record.expiry_timestamp - now)}, so the next call runs "
                "again (--force deletes it)"
            )
        if record.status is RecordStatus.COMPLETED and not force:
            raise CommandError(
                f"record {key!r} is COMPLETED: releasing it makes the next call run again; "
                "pass --force to delete it"
            )
        if record.owner_token is not None:
            await store.delete_record(record)
            done = "released" if record.status is RecordStatus.INPROGRESS else "deleted"
            return f"{done} {status} record {key!r} (fenced on owner token {record.owner_token!r})"
        if not force:
            raise CommandError(
                f"record {key!r} has no owner token (written by Powertools), so the delete "
                "cannot be fenced; pass --force to delete it unconditionally"
            )
        await store.purge_record(key)
        return f"deleted {status} record {key!r} unconditionally (it had no owner token)"


async def _get_record(store: AsyncDynamoStore, key: str) -> DataRecord:
    try:
        return await store.get_record(key)
    except IdempotencyItemNotFoundError as exc:
        raise CommandError(f"no record for key {key!r} in table {store.table_name!r}") from exc


def _create_table(args: argparse.Namespace, environ: Mapping[str, str]) -> str:
    layout, connection = layout_from(args, environ), connection_from(args, environ)
    return asyncio.run(create_table_command(layout, connection))


def _inspect(args: argparse.Namespace, environ: Mapping[str, str]) -> str:
    layout, connection = layout_from(args, environ), connection_from(args, environ)
    return asyncio.run(inspect_command(args.key, layout, connection, as_json=args.json))


def _release(args: argparse.Namespace, environ: Mapping[str, str]) -> str:
    layout, connection = layout_from(args, environ), connection_from(args, environ)
    return asyncio.run(release_command(args.key, layout, connection, force=args.force))


# --- errors and entry point -------------------------------------------------------


def error_message(exc: BaseException) -> str:
    """One line saying what went wrong, naming the cause where it is the real story."""
    causes = _causes(exc)
    if any(isinstance(c, NoCredentialsError) for c in causes):
        return (
            "no AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
            "or AWS_PROFILE, or configure ~/.aws"
        )
    if any(isinstance(c, NoRegionError) for c in causes):
        return "no AWS region: pass --region or set AWS_REGION or AWS_DEFAULT_REGION"
    validation = next((c for c in causes if isinstance(c, ValidationError)), None)
    text = str(exc)
    if validation is not None:
        text = "; ".join(str(e["msg"]).removeprefix("Value error, ") for e in validation.errors())
    return " ".join(text.split())


def _causes(exc: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__
    return chain


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """Run one command; return the exit code."""
    environ = os.environ if environ is None else environ
    args = build_parser().parse_args(argv)
    handler: Callable[[argparse.Namespace, Mapping[str, str]], str] = args.handler
    try:
        print(handler(args, environ))
    except UsageError as exc:
        return _fail(args.command, exc, EXIT_USAGE)
    except (CommandError, IdempotencyError) as exc:
        return _fail(args.command, exc, EXIT_RUNTIME)
    except KeyboardInterrupt:
        return 130
    return 0


def _fail(command: str, exc: BaseException, code: int) -> int:
    print(f"{PROG} {command}: error: {error_message(exc)}", file=sys.stderr)
    return code
