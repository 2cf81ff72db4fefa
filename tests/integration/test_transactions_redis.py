"""The Redis store cannot commit staged DynamoDB writes: stage() says so, and nothing is kept."""

from __future__ import annotations

import pytest

from idemstore import idempotent_function
from idemstore.errors import IdempotencyStagingError
from idemstore.stores.redis import AsyncRedisStore
from idemstore.transactions import Put, stage


@pytest.mark.asyncio
async def test_stage_with_the_redis_store_is_refused_and_releases_the_lock(
    redis_store: AsyncRedisStore,
) -> None:
    runs: list[int] = []

    @idempotent_function(data_keyword_argument="n", persistence_store=redis_store)
    async def staged(*, n: int) -> int:
        runs.append(n)
        stage(Put("orders", {"pk": "x"}))
        return n

    with pytest.raises(IdempotencyStagingError, match="AsyncRedisStore cannot commit"):
        await staged(n=1)
    with pytest.raises(IdempotencyStagingError):
        await staged(n=1)  # the lock was released: the function runs again
    assert runs == [1, 1]
