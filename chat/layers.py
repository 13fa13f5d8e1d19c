"""The channel layer: channels_redis's pub/sub layer, with publishes batched.

channels_redis publishes each message with its own round trip to Redis, under a lock
per shard, so under load every broadcast of the process queues behind the one in
flight. Here a publish joins the batch being gathered and the batch goes out as one
pipeline as soon as the previous one has been answered: one round trip for however
many messages arrived meanwhile, none of them waiting longer than one round trip
for its turn. Publishes keep their order (one batch at a time, in arrival order).
On the receiving side, a frame that a local socket would only drop (`exclude_user`,
`exclude_channel`) is not queued for it. Everything else (subscriptions, the receiving
task, serialization) is channels_redis's.
"""

from __future__ import annotations

import asyncio
import logging

from channels_redis.pubsub import (
    RedisPubSubChannelLayer,
    RedisPubSubLoopLayer,
    RedisSingleShardConnection,
)
from channels_redis.utils import _wrap_close, decode_hosts

logger = logging.getLogger(__name__)


class BatchingShardConnection(RedisSingleShardConnection):
    def __init__(self, host, channel_layer) -> None:
        super().__init__(host, channel_layer)
        # The batch being gathered: (channel, payload) pairs and the future its
        # publishers wait on. None while nothing waits to go out.
        self._batch: tuple[list[tuple[str, bytes]], asyncio.Future] | None = None
        self._sender: asyncio.Task | None = None

    async def publish(self, channel, message) -> None:
        if self._batch is None:
            self._batch = ([], asyncio.get_running_loop().create_future())
        messages, sent = self._batch
        messages.append((channel, message))
        if self._sender is None or self._sender.done():
            self._sender = asyncio.get_running_loop().create_task(self._send_batches())
        # Shielded: a publisher that is cancelled must not cancel its batch-mates' send.
        await asyncio.shield(sent)

    async def _send_batches(self) -> None:
        while self._batch is not None:
            (messages, sent), self._batch = self._batch, None
            try:
                async with self._lock:
                    self._ensure_redis()
                    pipe = self._redis.pipeline(transaction=False)
                    for channel, payload in messages:
                        pipe.publish(channel, payload)
                    await pipe.execute()
            except BaseException as exc:
                # Publishers learn of the failure (a cancelled sender fails its batch,
                # it does not leave it waiting forever).
                if not sent.done():
                    failure = exc if isinstance(exc, Exception) else ConnectionError(str(exc))
                    sent.set_exception(failure)
                    sent.exception()  # retrieved: nobody may be waiting any more
                if not isinstance(exc, Exception):
                    raise
            else:
                if not sent.done():
                    sent.set_result(None)

    def _receive_message(self, message) -> None:
        # A group message that some local sockets would only drop (`exclude_user`,
        # `exclude_channel`: see `ChatConsumer.parley_frame`) is not queued for them:
        # with typing and receipts on, most of what a process receives is such frames
        # (the typist's own sockets, the socket that reported a marker), and waking a
        # consumer to drop one costs as much as delivering it.
        if message is not None and b"exclude_" in message["data"]:
            name = message["channel"]
            if isinstance(name, bytes):
                name = name.decode()
            members = self.channel_layer.groups.get(name)
            if members:
                data = message["data"]
                skip = _excluded(self.channel_layer.channel_layer.deserialize(data))
                channels = self.channel_layer.channels
                for channel_name in members:
                    queue = channels.get(channel_name)
                    if queue is not None and channel_name not in skip:
                        queue.put_nowait(data)
                return
        super()._receive_message(message)


def _excluded(event: dict) -> set[str]:
    """The channels of this process that would drop this event themselves."""
    skip = set()
    channel = event.get("exclude_channel")
    if isinstance(channel, str):
        skip.add(channel)
    user_id = event.get("exclude_user")
    if user_id is not None:
        from chat.connections import registry

        skip.update(consumer.channel_name for consumer in registry.by_user.get(user_id, ()))
    return skip


class BatchingLoopLayer(RedisPubSubLoopLayer):
    def __init__(self, hosts=None, **kwargs) -> None:
        super().__init__(hosts, **kwargs)
        self._shards = [BatchingShardConnection(host, self) for host in decode_hosts(hosts)]


class BatchingPubSubChannelLayer(RedisPubSubChannelLayer):
    """`channels_redis.pubsub.RedisPubSubChannelLayer` with batched publishes."""

    def _get_layer(self):
        loop = asyncio.get_running_loop()
        try:
            return self._layers[loop]
        except KeyError:
            layer = BatchingLoopLayer(*self._args, **self._kwargs, channel_layer=self)
            self._layers[loop] = layer
            _wrap_close(self, loop)
            return layer
