"""Where the examples keep their records.

With ``AWS_ENDPOINT_URL_DYNAMODB`` or ``AWS_ENDPOINT_URL`` set (botocore's own
variables, which the store's client reads itself): that endpoint, with the
usual AWS credentials and region (us-east-1 when none is set). Unset: a
DynamoDB-protocol server started on loopback for the length of the run, so the
examples need no AWS account and never touch a real table by accident.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from aiobotocore.session import AioSession

from idemstore import AsyncDynamoStore

ENDPOINT_ENVS = ("AWS_ENDPOINT_URL_DYNAMODB", "AWS_ENDPOINT_URL")
REGION_ENVS = ("AWS_REGION", "AWS_DEFAULT_REGION")


@dataclass(frozen=True)
class Endpoint:
    url: str | None
    """None: the endpoint botocore reads from the environment."""
    session: AioSession | None = None
    """None: the default AWS credential chain."""

    def store(self, table_name: str) -> AsyncDynamoStore:
        has_region = any(os.environ.get(name) for name in REGION_ENVS)
        return AsyncDynamoStore(
            table_name,
            endpoint_url=self.url,
            region_name=None if has_region else "us-east-1",
            session=self.session,
        )

    def __str__(self) -> str:
        return self.url or configured_endpoint() or "AWS"


def configured_endpoint() -> str | None:
    if os.environ.get("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "").strip().lower() == "true":
        return None  # botocore would ignore the variables too
    return next((os.environ[name] for name in ENDPOINT_ENVS if os.environ.get(name)), None)


@contextmanager
def dynamodb_endpoint() -> Iterator[Endpoint]:
    """The configured endpoint, or a local server that is stopped on exit."""
    if configured_endpoint():
        yield Endpoint(url=None)  # the store passes no URL: botocore finds the variable
        return
    # Imported here: the local server needs the test extra, a configured endpoint does not.
    from idemstore.loopback import start_moto_server

    server, local = start_moto_server()
    try:
        yield Endpoint(local.url, local.session())
    finally:
        server.stop()
