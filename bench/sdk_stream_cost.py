#!/usr/bin/env python3
"""What reading one streamed reply costs the client, by the SDK call that reads it.

    .venv/bin/python bench/sdk_stream_cost.py --replies 40 --concurrency 10 --rounds 3

Issue 3 names `messages.stream`; under its benchmark about half of the server's CPU per
reply is that call (docs/performance.md). This measures the call alone, with no server,
database or websocket (Django only loads the settings): the fake Messages API
(tests/fake_anthropic.py, in its own process, pinned to the other CPU where there is
one) streams --tokens text deltas at --tokens-per-s, and this process, pinned to CPU0,
reads --replies of them, --concurrency at a time, with Parley's own SDK client and
request parameters
(`AnthropicProvider.client()` and `_params`: the aiohttp transport, the timeouts, the
cache breakpoints), in one of four ways:

- `provider`: Parley's own `AnthropicProvider.stream` (which reads `messages.stream`);
- `stream`: `messages.stream`, iterating its events (the SDK's snapshot and text events);
- `create`: `messages.create(stream=True)`, the same typed events without the snapshot;
- `raw`: `messages.with_streaming_response.create(stream=True)`, the lines parsed with
  `json.loads`: no typed events at all.

CPU per reply is this process's `time.process_time()` over the batch, divided by the
replies. The ways run in turn, --rounds times, the first one rotating; the summary is
each way's median. Only the ratios mean much on a shared machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WAYS = ("provider", "stream", "create", "raw")


async def text_deltas(events) -> int:
    deltas = 0
    async for event in events:
        if event.type == "content_block_delta" and event.delta.type == "text_delta":
            deltas += 1
    return deltas


async def read_stream(client, params: dict) -> int:
    async with client.messages.stream(**params) as stream:
        return await text_deltas(stream)


async def read_create(client, params: dict) -> int:
    stream = await client.messages.create(stream=True, **params)
    async with stream:
        return await text_deltas(stream)


async def read_raw(client, params: dict) -> int:
    deltas = 0
    async with client.messages.with_streaming_response.create(stream=True, **params) as response:
        async for line in response.iter_lines():
            if line.startswith("data: ") and json.loads(line[6:])["type"] == "content_block_delta":
                deltas += 1
    return deltas


def parley_provider(base_url: str, api_key: str):
    """Parley's provider and a request of one turn: every way reads with its SDK client
    (aiohttp, timeouts) and sends the parameters it builds (`_params`)."""
    from characters.llm.anthropic import AnthropicProvider
    from characters.llm.base import ReplyRequest, TextDelta, Turn

    provider = AnthropicProvider(api_key=api_key, base_url=base_url, default_model="claude-bench")
    request = ReplyRequest(system="You are a bench.", turns=[Turn("user", "Hello.")], model="")

    async def read_provider(client, params: dict) -> int:
        deltas = 0
        async for event in provider.stream(request):
            deltas += isinstance(event, TextDelta)
        return deltas

    return provider, provider._params(request), read_provider


async def batch(read, client, params: dict, replies: int, concurrency: int) -> tuple[float, int]:
    """(CPU seconds per reply, deltas per reply)."""
    gate = asyncio.Semaphore(concurrency)

    async def one() -> int:
        async with gate:
            return await read(client, params)

    await read(client, params)  # a warm connection and warm caches
    started = time.process_time()
    counts = await asyncio.gather(*(one() for _ in range(replies)))
    return (time.process_time() - started) / replies, counts[0]


async def run(args, base_url: str, api_key: str) -> dict[str, list[float]]:
    provider, params, read_provider = parley_provider(base_url, api_key)
    client = provider.client()  # this loop's, as the server's replies use it
    readers = {
        "provider": read_provider,
        "stream": read_stream,
        "create": read_create,
        "raw": read_raw,
    }
    ways = [w for w in WAYS if w in args.ways]
    results: dict[str, list[float]] = {w: [] for w in ways}
    for r in range(args.rounds):
        for way in ways[r % len(ways) :] + ways[: r % len(ways)]:
            cpu, deltas = await batch(readers[way], client, params, args.replies, args.concurrency)
            results[way].append(cpu * 1000)
            print(
                f"round {r + 1} {way:9s} {cpu * 1000:6.1f} ms CPU per reply ({deltas} deltas)",
                flush=True,
            )
    await provider.aclose()
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--replies", type=int, default=40, help="per batch")
    ap.add_argument("--concurrency", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--tokens", type=int, default=300)
    ap.add_argument("--tokens-per-s", type=float, default=100, help="0: as fast as possible")
    ap.add_argument("--ways", default=",".join(WAYS))
    args = ap.parse_args()
    args.ways = args.ways.split(",")

    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()  # `characters.llm` reads settings; nothing here touches a database

    pinned = (os.cpu_count() or 1) > 1
    if pinned:
        os.sched_setaffinity(0, {0})
    fake_cmd = [
        sys.executable, "-u", str(ROOT / "tests" / "fake_anthropic.py"),
        "--latency-ms", "0", "--tokens", str(args.tokens), "--tokens-per-s", str(args.tokens_per_s),
    ]  # fmt: skip
    fake = subprocess.Popen(
        fake_cmd,
        stdout=subprocess.PIPE,
        text=True,
        preexec_fn=(lambda: os.sched_setaffinity(0, {1})) if pinned else None,
    )
    try:
        found = re.search(
            r"ANTHROPIC_BASE_URL=(\S+) ANTHROPIC_API_KEY=(\S+)", fake.stdout.readline()
        )
        if not found:
            sys.exit("the fake did not start")
        results = asyncio.run(run(args, found.group(1), found.group(2)))
    finally:
        fake.kill()
    medians = {way: round(statistics.median(v), 1) for way, v in results.items()}
    print()
    print("| way | CPU per reply, median (ms) | each round (ms) | vs `stream` |")
    print("|---|---|---|---|")
    for way, values in results.items():
        ratio = f"{medians[way] / medians['stream']:.2f}" if "stream" in medians else ""
        print(f"| `{way}` | {medians[way]} | {', '.join(f'{v:.1f}' for v in values)} | {ratio} |")
    print(json.dumps({"args": vars(args), "cpu_ms_per_reply_median": medians}))


if __name__ == "__main__":
    main()
