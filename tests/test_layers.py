"""The batching pub/sub channel layer (chat/layers.py) on the real Redis."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from django.conf import settings

from chat.layers import BatchingPubSubChannelLayer


@pytest.fixture
async def layer():
    layer = BatchingPubSubChannelLayer(
        hosts=[settings.REDIS_URL], prefix=f"parley-layer-test-{uuid.uuid4().hex[:8]}"
    )
    yield layer
    await layer.flush()


def count_round_trips(layer) -> list[int]:
    """Sizes of the pipelines the layer's shard sends."""
    shard = layer._get_layer()._shards[0]
    shard._ensure_redis()
    sizes: list[int] = []
    real_pipeline = shard._redis.pipeline

    def pipeline(*args, **kwargs):
        pipe = real_pipeline(*args, **kwargs)
        real_execute = pipe.execute

        async def execute(*a, **k):
            sizes.append(len(pipe.command_stack))
            return await real_execute(*a, **k)

        pipe.execute = execute
        return pipe

    shard._redis.pipeline = pipeline
    return sizes


async def test_concurrent_publishes_share_round_trips_and_keep_their_order(layer):
    channel = await layer.new_channel()
    await layer.group_add("room", channel)
    sizes = count_round_trips(layer)

    await asyncio.gather(*(layer.group_send("room", {"type": "m", "n": n}) for n in range(300)))

    received = [(await asyncio.wait_for(layer.receive(channel), 5))["n"] for _ in range(300)]
    assert received == list(range(300))
    assert sum(sizes) == 300
    # One publish waits for the first round trip; the other 299 go out together after it
    # (channels_redis alone makes 300 round trips, one after the other).
    assert len(sizes) <= 3, sizes


async def test_a_lone_publish_goes_out_at_once(layer):
    channel = await layer.new_channel()
    await layer.group_add("room", channel)
    sizes = count_round_trips(layer)
    await layer.group_send("room", {"type": "m", "n": 1})
    assert (await asyncio.wait_for(layer.receive(channel), 5))["n"] == 1
    assert sizes == [1]


async def test_a_failed_round_trip_fails_its_publishers_and_the_next_batch_works(layer):
    channel = await layer.new_channel()
    await layer.group_add("room", channel)
    shard = layer._get_layer()._shards[0]
    shard._ensure_redis()
    real_pipeline = shard._redis.pipeline
    failures = iter([True])

    def pipeline(*args, **kwargs):
        pipe = real_pipeline(*args, **kwargs)
        if next(failures, False):

            async def broken(*a, **k):
                raise ConnectionError("redis went away")

            pipe.execute = broken
        return pipe

    shard._redis.pipeline = pipeline
    with pytest.raises(ConnectionError):
        await layer.group_send("room", {"type": "m", "n": 1})
    await layer.group_send("room", {"type": "m", "n": 2})
    assert (await asyncio.wait_for(layer.receive(channel), 5))["n"] == 2
