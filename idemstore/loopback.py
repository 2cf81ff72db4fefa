"""A DynamoDB-protocol server on loopback, for tests, examples and benchmarks.

No pytest here (the fixtures in ``idemstore.testing`` build on this module):
``start_moto_server`` starts moto's threaded server on 127.0.0.1 and a free
port; ``isolated_session`` gives dummy credentials that never read the user's
AWS configuration; ``RequestLog`` counts the requests a client sends.
Needs the ``test`` extra (moto).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
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
