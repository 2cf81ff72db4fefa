"""Tables on the session's moto server for proofs whose fixtures are synchronous."""

import asyncio
import uuid

from idemstore.tables import create_table
from idemstore.testing import MotoEndpoint


def new_table(moto_server: MotoEndpoint, prefix: str) -> str:
    """Create a fresh idempotency table named ``<prefix>-<random>``; return its name."""
    name = f"{prefix}-{uuid.uuid4().hex[:12]}"

    async def create() -> None:
        async with moto_server.store(name) as store:
            await create_table(store)

    asyncio.run(create())
    return name
