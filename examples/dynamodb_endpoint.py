"""Where the examples keep their records.

With ``IDEMSTORE_ENDPOINT_URL`` set: that endpoint, with the usual AWS
credentials and ``AWS_REGION`` (default us-east-1). Unset: a DynamoDB-protocol
server started on loopback for the length of the run, so the examples need no
AWS account.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from aiobotocore.session import AioSession

from idemstore import AsyncDynamoStore

ENDPOINT_ENV = "IDEMSTORE_ENDPOINT_URL"


@dataclass(frozen=True)
class Endpoint:
    url: str
    session: AioSession | None = None
    """None: the default AWS credential chain."""

    def store(self, table_name: str) -> AsyncDynamoStore:
        return AsyncDynamoStore(
            table_name,
            endpoint_url=self.url,
            region_name=os.environ.get("AWS_REGION", "us-east-1"),
            session=self.session,
        )


@contextmanager
def dynamodb_endpoint() -> Iterator[Endpoint]:
    """The configured endpoint, or a local server that is stopped on exit."""
    configured = os.environ.get(ENDPOINT_ENV)
    if configured:
        yield Endpoint(configured)
        return
    # Imported here: the local server needs the test extra, a configured endpoint does not.
    from idemstore.loopback import start_moto_server

    server, local = start_moto_server()
    try:
        yield Endpoint(local.url, local.session())
    finally:
        server.stop()
