"""Quick start: a lock in DynamoDB, taken once; a second taker sees the holder's record.

With no endpoint configured this starts a local DynamoDB-protocol server on
loopback, so it needs no AWS account. Set IDEMSTORE_ENDPOINT_URL to use another.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid

from idemstore import (
    AsyncDynamoStore,
    DataRecord,
    IdempotencyItemAlreadyExistsError,
    RecordStatus,
    create_table,
)


async def demo(store: AsyncDynamoStore) -> None:
    await create_table(store)
    now = time.time()
    lock = DataRecord(
        idempotency_key="quickstart#order-1",
        status=RecordStatus.INPROGRESS,
        expiry_timestamp=int(now) + 3600,
        in_progress_expiry_timestamp=int(now * 1000) + 60_000,
        owner_token=uuid.uuid4().hex,
    )
    await store.put_record(lock, now=now)
    print(f"first caller took the lock on {lock.idempotency_key}")
    try:
        await store.put_record(lock.model_copy(update={"owner_token": uuid.uuid4().hex}), now=now)
    except IdempotencyItemAlreadyExistsError as exc:
        held = exc.old_data_record
        assert held is not None
        print(f"second caller refused: record is {held.status.value}, held by {held.owner_token}")


async def main() -> None:
    endpoint = os.environ.get("IDEMSTORE_ENDPOINT_URL")
    if endpoint:
        async with AsyncDynamoStore("idempotency", endpoint_url=endpoint) as store:
            await demo(store)
        return
    from idemstore.testing import start_moto_server

    server, local = start_moto_server()
    try:
        async with local.store("idempotency") as store:
            await demo(store)
    finally:
        server.stop()


if __name__ == "__main__":
    asyncio.run(main())
