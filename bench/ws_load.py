#!/usr/bin/env python3
"""Websocket load generator for Parley (and, for comparison, the peer reference servers).

Runs as its own process against a RUNNING server, on loopback only. C sockets are spread
over R two-person conversations: socket c is member c // R (0 or 1) of conversation c % R,
authenticated with line 2 * (c % R) + c // R of --tokens-file (bench/setup_data.py writes
it). Each socket waits for `session:ready`, sends `conversation:join` and waits for
`conversation:joined`. Then S senders (sockets 0..S-1, one per conversation while S <= R)
send `message:send` frames with a unique client_id and a text carrying the marker
`LG~<sender>~<seq>~<monotonic ns>~`, either

- open loop: --rate messages/s per sender on a fixed schedule (random phase) for
  --duration seconds, or
- closed loop (--rate 0, saturation): each sender keeps --window messages in flight; one
  is done when every socket of its conversation received it (or after --ack-timeout);
  senders stop starting new ones after --duration seconds,

and every socket records the `message:receive` frames it gets. Idle mode (--senders 0):
connect, join, hold --hold seconds, report the server's RSS per connection.

Reported (one JSON line on stdout, a summary on stderr): deliveries/s during the send
window, end-to-end latency p50/p95/p99/max (send timestamp in the marker to receipt),
lost = expected deliveries - unique deliveries received, duplicates, sockets dropped
(closed by the server), `message:status` sent/failed, error frames, and, for every
--pid NAME=PID / --comm NAME=COMM, the RSS and CPU seconds of those processes read from
/proc (CPU microseconds per delivery = CPU seconds in the send window / deliveries in it).

--typing / --receipts (parley): every client also types and sends receipts as the
browser client does (static/js/chat/composer.js, main.js): typing:start when its user
starts typing a message (re-sent at most every 3 s), typing:stop when the message is
submitted; message:delivered / message:read coalesced to one flush per 400 ms per
socket, only what moved. The frames these cause are counted in "live".

--protocol tutorial speaks the Channels tutorial's protocol instead (the peer servers in
/work/shared/peer-bench/peer): --url with ${room}, no auth, no join, {"message": text} in
both directions; the same load shape and the same measurements.

Every run is bounded by --timeout (hard, seconds); non-loopback hosts are refused.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import random
import resource
import signal
import string
import sys
import time
import uuid
from collections import deque
from urllib.parse import urlsplit

MARK = "LG~"
BIG = 1 << 32  # key = sender * BIG + seq
LOOPBACK = {"127.0.0.1", "localhost", "::1"}
CLK_TCK = os.sysconf("SC_CLK_TCK")


def pct(sorted_vals: list[float], p: float) -> float | None:
    if not sorted_vals:
        return None
    k = (len(sorted_vals) - 1) * p / 100.0
    f, c = math.floor(k), math.ceil(k)
    if f == c:
        return sorted_vals[int(k)]
    return sorted_vals[f] + (sorted_vals[c] - sorted_vals[f]) * (k - f)


def r2(v: float | None, nd: int = 2) -> float | None:
    return None if v is None else round(v, nd)


# --------------------------------------------------------------------------- /proc


def _stat(pid: int, children: bool) -> tuple[int, float] | None:
    """(rss KiB, cpu seconds) of one process; with children, reaped children's CPU too."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    ticks = int(fields[11]) + int(fields[12])
    if children:
        ticks += int(fields[13]) + int(fields[14])
    rss_kib = int(fields[21]) * (resource.getpagesize() // 1024)
    return rss_kib, ticks / CLK_TCK


def _pids_by_comm(comm: str) -> list[int]:
    pids = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/comm") as f:
                if f.read().strip() == comm:
                    pids.append(int(name))
        except OSError:
            continue
    return pids


def machine_busy_s() -> float:
    """CPU seconds the whole machine spent busy (all CPUs, /proc/stat), for noise checks."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / CLK_TCK


class PgBackends:
    """CPU and RSS of the PostgreSQL backends serving one database (--pg-db), polled every
    0.5 s from pg_stat_activity, so that backends replaced during the run (CONN_MAX_AGE)
    still count, and other databases' backends (other people's tests) do not."""

    def __init__(self, dsn: str, db: str, renice: int | None = None) -> None:
        import threading

        import psycopg

        self.conn = psycopg.connect(dsn, autocommit=True)
        self.db = db
        self.renice = renice  # give the backends of our database this nice value
        self.cpu: dict[int, float] = {}  # pid -> last seen CPU seconds
        self.rss: dict[int, int] = {}
        self.lock = threading.Lock()
        self.poll()
        threading.Thread(target=self._loop, daemon=True).start()

    def poll(self) -> None:
        rows = self.conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            [self.db],
        ).fetchall()
        live = set()
        for (pid,) in rows:
            if self.renice is not None and pid not in self.cpu:
                with contextlib.suppress(OSError):
                    os.setpriority(os.PRIO_PROCESS, pid, self.renice)
            s = _stat(pid, children=False)
            if s:
                with self.lock:
                    self.rss[pid], self.cpu[pid] = s
                live.add(pid)
        with self.lock:
            for pid in list(self.rss):
                if pid not in live:
                    self.rss.pop(pid)

    def _loop(self) -> None:
        while True:
            time.sleep(0.5)
            try:
                self.poll()
            except Exception:
                return

    def sample(self) -> dict:
        with contextlib.suppress(Exception):
            self.poll()
        with self.lock:
            return {
                "rss_kib": sum(self.rss.values()),
                "cpu_s": sum(self.cpu.values()),
                "procs": len(self.rss),
            }


class ProcWatch:
    """RSS and CPU of named processes: --pid NAME=PID (one process, threads included),
    --comm NAME=COMM (every process of that name, summed, reaped children included) and
    --pg-db (the PostgreSQL backends of one database)."""

    def __init__(self, pids: dict[str, int], comms: dict[str, str], pg=None) -> None:
        self.pids = pids
        self.comms = comms
        self.pg = pg

    def sample(self) -> dict[str, dict]:
        out = {}
        if self.pg is not None:
            out["postgres"] = self.pg.sample()
        for name, pid in self.pids.items():
            s = _stat(pid, children=False)
            out[name] = {"rss_kib": s[0], "cpu_s": s[1]} if s else {}
        for name, comm in self.comms.items():
            rss, cpu, n = 0, 0.0, 0
            for pid in _pids_by_comm(comm):
                s = _stat(pid, children=True)
                if s:
                    rss, cpu, n = rss + s[0], cpu + s[1], n + 1
            out[name] = {"rss_kib": rss, "cpu_s": cpu, "procs": n}
        out["machine"] = {"cpu_s": machine_busy_s()}
        return out


# --------------------------------------------------------------------------- load


class Sock:
    __slots__ = (
        "conv",
        "delivered_sent",
        "got",
        "idx",
        "joined",
        "newest",
        "newest_other",
        "read_sent",
        "signal_timer",
        "slot",
        "typing",
        "typing_sent_at",
        "user_id",
        "ws",
    )

    def __init__(self, idx: int, conv: int, slot: int) -> None:
        self.idx = idx
        self.conv = conv  # conversation index (0..R-1)
        self.slot = slot
        self.ws = None
        self.got: set[int] = set()
        self.joined: asyncio.Future | None = None
        self.user_id = None  # from session:ready (--receipts: skip one's own messages)
        # --receipts, as static/js/chat/main.js: markers sent, newest seq seen (all
        # messages / others' messages), the pending coalescing timer
        self.delivered_sent = 0
        self.read_sent = 0
        self.newest = 0
        self.newest_other = 0
        self.signal_timer: asyncio.TimerHandle | None = None
        # --typing, as static/js/chat/composer.js
        self.typing = False
        self.typing_sent_at = 0.0


class Load:
    def __init__(self, cfg, tokens: list[str] | None, conv_ids: list[str] | None) -> None:
        self.cfg = cfg
        self.tokens = tokens
        self.conv_ids = conv_ids
        self.parley = cfg.protocol == "parley"
        self.run_id = uuid.uuid4().hex[:8]
        self.socks: list[Sock] = []
        self.tasks: set[asyncio.Task] = set()
        self.ready: list[Sock] = []
        self.joined_per_conv: dict[int, int] = {}
        self.handshake_ms: list[float] = []
        self.join_ms: list[float] = []
        self.connect_errors: dict[str, int] = {}
        self.join_errors: dict[str, int] = {}
        self.close_codes: dict[str, int] = {}
        self.dropped = 0
        self.stopping = False
        # sending
        self.sent = 0
        self.send_errors = 0
        self.ack_timeouts = 0
        self.remaining: dict[int, int] = {}  # key -> deliveries still expected
        self.futs: dict[int, asyncio.Future] = {}
        self.expected = 0
        self.sched_lag_ms: list[float] = []
        # receiving
        self.lat_ns: list[int] = []
        self.recv_ns: list[int] = []  # receipt time of each latency sample
        self.delivered = 0  # unique deliveries
        self.in_window = 0  # unique deliveries received before the send window closed
        self.dups = 0
        self.unexpected = 0
        self.foreign = 0  # a delivery for a conversation this socket did not join
        self.status_sent = 0
        self.status_dup = 0
        self.status_failed = 0
        self.errors: dict[str, int] = {}
        self.other_frames = 0
        # --typing / --receipts
        self.typing_sent = 0
        self.receipts_sent = 0
        self.live_frames: dict[str, int] = {}  # typing:indicator, receipt:update, presence:update
        self.buckets: dict[int, int] = {}
        self.go_ns = 0
        self.stop_ns = 1 << 62
        self.pad = "x" * max(0, cfg.text_bytes - 40)

    # -- connecting

    def conv_id(self, r: int) -> str:
        return self.conv_ids[r] if self.conv_ids else f"r{r}"

    def url_for(self, s: Sock) -> str:
        return string.Template(self.cfg.url).safe_substitute(room=self.conv_id(s.conv))

    def token_for(self, s: Sock) -> str:
        return self.tokens[(2 * s.conv + s.slot) % len(self.tokens)]

    def count(self, bucket: dict[str, int], key: str) -> None:
        bucket[key] = bucket.get(key, 0) + 1

    async def open_one(self, s: Sock, sem: asyncio.Semaphore) -> None:
        from websockets.asyncio.client import connect

        headers = {}
        if self.parley and self.tokens:
            headers["Authorization"] = f"Bearer {self.token_for(s)}"
        async with sem:
            t0 = time.perf_counter()
            try:
                ws = await connect(
                    self.url_for(s),
                    additional_headers=headers or None,
                    open_timeout=self.cfg.connect_timeout,
                    ping_interval=None,
                    compression=None,
                    max_size=2**22,
                    max_queue=None,
                )
            except Exception as exc:
                self.count(self.connect_errors, f"{type(exc).__name__}: {str(exc)[:80]}")
                return
            t1 = time.perf_counter()
            self.handshake_ms.append((t1 - t0) * 1000)
            s.ws = ws
            s.joined = asyncio.get_running_loop().create_future()
            self.tasks.add(asyncio.create_task(self.reader(s)))
            if not self.parley:
                s.joined.set_result(True)
            try:
                ok = await asyncio.wait_for(s.joined, self.cfg.connect_timeout)
            except TimeoutError:
                ok = False
                self.count(self.join_errors, "timeout")
            if ok:
                self.join_ms.append((time.perf_counter() - t1) * 1000)
                self.ready.append(s)
                self.joined_per_conv[s.conv] = self.joined_per_conv.get(s.conv, 0) + 1

    async def reader(self, s: Sock) -> None:
        ws = s.ws
        mono = time.monotonic_ns
        loads = json.loads
        parley = self.parley
        lat = self.lat_ns
        rtimes = self.recv_ns
        remaining = self.remaining
        futs = self.futs
        buckets = self.buckets
        got = s.got
        conv_id = self.conv_id(s.conv)
        try:
            async for raw in ws:
                now = mono()
                if isinstance(raw, bytes):
                    raw = raw.decode("utf-8", "replace")
                if parley:
                    obj = loads(raw)
                    kind = obj.get("type")
                    if kind != "message:receive":
                        await self.control_frame(s, kind, obj)
                        continue
                    message = obj["message"]
                    if str(message.get("conversation")) != conv_id:
                        self.foreign += 1
                    if self.cfg.receipts:
                        self.received(s, message)
                    text = message.get("text") or ""
                else:
                    text = raw
                k = text.find(MARK)
                if k < 0:
                    self.other_frames += 1
                    continue
                try:
                    sender, seq, ts, _ = text[k + 3 : k + 80].split("~", 3)
                    key = int(sender) * BIG + int(seq)
                    ts = int(ts)
                except ValueError:
                    self.other_frames += 1
                    continue
                if key in got:
                    self.dups += 1
                    continue
                got.add(key)
                left = remaining.get(key)
                if left is None:
                    self.unexpected += 1
                    continue
                self.delivered += 1
                if now <= self.stop_ns:
                    self.in_window += 1
                b = (now - self.go_ns) // 1_000_000_000
                buckets[b] = buckets.get(b, 0) + 1
                lat.append(now - ts)
                rtimes.append(now)
                remaining[key] = left - 1
                if left <= 1:
                    fut = futs.pop(key, None)
                    if fut is not None and not fut.done():
                        fut.set_result(None)
        except Exception as exc:  # ConnectionClosed and friends
            code = getattr(getattr(exc, "rcvd", None), "code", None)
            self.count(self.close_codes, str(code) if code else type(exc).__name__)
        else:
            rcvd = getattr(ws, "close_code", None)
            self.count(self.close_codes, str(rcvd))
        if s.joined is not None and not s.joined.done():
            self.count(self.join_errors, f"closed {getattr(ws, 'close_code', None)}")
            s.joined.set_result(False)
        if not self.stopping:
            self.dropped += 1

    async def control_frame(self, s: Sock, kind: str | None, obj: dict) -> None:
        if kind == "message:status":
            if obj.get("status") == "sent":
                self.status_sent += 1
                self.status_dup += bool(obj.get("duplicate"))
            else:
                self.status_failed += 1
                self.count(self.errors, f"status:{(obj.get('error') or {}).get('code')}")
        elif kind == "session:ready":
            s.user_id = (obj.get("user") or {}).get("id")
            conv = self.conv_id(s.conv)
            await s.ws.send(
                json.dumps(
                    {
                        "type": "conversation:join",
                        "conversation": int(conv) if conv.isdigit() else conv,
                    }
                )
            )
        elif kind == "conversation:joined":
            if s.joined is not None and not s.joined.done():
                s.joined.set_result(True)
        elif kind == "error":
            self.count(self.errors, str(obj.get("code")))
            if s.joined is not None and not s.joined.done():
                self.count(self.join_errors, f"error {obj.get('code')}")
                s.joined.set_result(False)
        else:
            if kind in ("typing:indicator", "receipt:update", "presence:update"):
                self.count(self.live_frames, kind)
            self.other_frames += 1

    # -- sending

    # As the browser client does (static/js/chat/main.js, composer.js); keep in step.
    SIGNALS_S = 0.4  # main.js SIGNALS_MS: markers coalesced to one flush per 400 ms
    TYPING_RESEND_S = 3.0  # composer.js TYPING_RESEND_MS
    TYPING_IDLE_S = 4.0  # composer.js TYPING_IDLE_MS (never reached: every typing ends in a send)

    def received(self, s: Sock, message: dict) -> None:
        """--receipts: a message arrived. A message from someone else schedules a flush of
        the markers SIGNALS_S later, unless one is pending (main.js `markRead`)."""
        seq = message.get("seq") or 0
        if seq > s.newest:
            s.newest = seq
        if message["sender"]["id"] == s.user_id:
            return
        if seq > s.newest_other:
            s.newest_other = seq
        if s.signal_timer is None:
            s.signal_timer = asyncio.get_running_loop().call_later(
                self.SIGNALS_S, self._flush_signals, s
            )

    def _flush_signals(self, s: Sock) -> None:
        """main.js `flushSignals`: `message:delivered` up to the newest message from
        someone else, `message:read` up to the newest message (the page is visible and
        scrolled to the bottom), each only if it moved since last sent."""
        s.signal_timer = None
        if self.stopping:
            return
        conv = self.conv_id(s.conv)
        cid = int(conv) if conv.isdigit() else conv
        frames = []
        if s.newest_other > s.delivered_sent:
            s.delivered_sent = s.newest_other
            frames.append({"type": "message:delivered", "conversation": cid, "seq": s.newest_other})
        if s.newest > s.read_sent:
            s.read_sent = s.newest
            frames.append({"type": "message:read", "conversation": cid, "seq": s.newest})
        if frames:
            task = asyncio.get_running_loop().create_task(self._send_frames(s, frames, "receipt"))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def _send_frames(self, s: Sock, frames: list[dict], what: str) -> None:
        for frame in frames:
            try:
                await s.ws.send(json.dumps(frame))
            except Exception:
                self.send_errors += 1
                return
            if what == "receipt":
                self.receipts_sent += 1
            else:
                self.typing_sent += 1

    async def start_typing(self, s: Sock) -> None:
        """--typing: composer.js `#startTyping` on a keystroke: `typing:start` unless one
        went out less than TYPING_RESEND_S ago while still typing."""
        now = time.monotonic()
        if not s.typing or now - s.typing_sent_at >= self.TYPING_RESEND_S:
            s.typing = True
            s.typing_sent_at = now
            conv = self.conv_id(s.conv)
            cid = int(conv) if conv.isdigit() else conv
            await self._send_frames(s, [{"type": "typing:start", "conversation": cid}], "typing")

    async def stop_typing(self, s: Sock) -> None:
        """--typing: composer.js `#stopTyping`, which `submit` calls before sending."""
        if s.typing:
            s.typing = False
            conv = self.conv_id(s.conv)
            cid = int(conv) if conv.isdigit() else conv
            await self._send_frames(s, [{"type": "typing:stop", "conversation": cid}], "typing")

    async def send_one(self, s: Sock, seq: int) -> asyncio.Future | None:
        if self.cfg.typing and self.parley:
            # --typing: the user typed this message (open loop: the typing began
            # earlier, see sender_open; closed loop: just now) and submits it, which
            # ends the typing first (composer.js `submit`). Both frames go before the send
            # timestamp: the server's work on them still counts in the latency.
            await self.start_typing(s)
            await self.stop_typing(s)
        key = s.idx * BIG + seq
        exp = self.joined_per_conv.get(s.conv, 0)
        fut = None
        if self.cfg.rate == 0:
            fut = asyncio.get_running_loop().create_future()
            self.futs[key] = fut
        self.remaining[key] = exp
        ts = time.monotonic_ns()
        text = f"{MARK}{s.idx}~{seq}~{ts}~{self.pad}"
        if self.parley:
            conv = self.conv_id(s.conv)
            payload = json.dumps(
                {
                    "type": "message:send",
                    "conversation": int(conv) if conv.isdigit() else conv,
                    "client_id": f"lg-{self.run_id}-{s.idx}-{seq}",
                    "text": text,
                }
            )
        else:
            payload = json.dumps({"message": text})
        try:
            await s.ws.send(payload)
        except Exception:
            self.send_errors += 1
            del self.remaining[key]
            self.futs.pop(key, None)
            return None
        self.sent += 1
        self.expected += exp
        return fut

    async def sender_open(self, s: Sock, go: float, stop: float) -> None:
        interval = 1.0 / self.cfg.rate
        n = int((stop - go) * self.cfg.rate)
        t0 = go + random.uniform(0, interval)
        lag = self.sched_lag_ms
        # --typing: the user starts typing each message this long before sending it
        lead = min(1.0, interval / 2) if self.cfg.typing and self.parley else 0.0
        for seq in range(n):
            due = t0 + seq * interval
            if lead:
                d = due - lead - time.monotonic()
                if d > 0:
                    await asyncio.sleep(d)
                await self.start_typing(s)
            d = due - time.monotonic()
            if d > 0:
                await asyncio.sleep(d)
            lag.append((time.monotonic() - due) * 1000)
            await self.send_one(s, seq)

    async def sender_closed(self, s: Sock, go: float, stop: float) -> None:
        cfg = self.cfg
        await asyncio.sleep(max(0.0, go - time.monotonic()) + random.uniform(0, 0.01))
        inflight: deque[asyncio.Future] = deque()
        seq = 0
        while time.monotonic() < stop:
            if len(inflight) >= cfg.window:
                f = inflight.popleft()
                try:
                    await asyncio.wait_for(f, cfg.ack_timeout)
                except TimeoutError:
                    self.ack_timeouts += 1
                continue
            fut = await self.send_one(s, seq)
            seq += 1
            if fut is None:
                return
            inflight.append(fut)

    async def drain(self, deadline: float) -> None:
        """Until every expected delivery arrived, --drain s without progress, or deadline."""
        last, since = -1, time.monotonic()
        while time.monotonic() < deadline:
            if self.delivered >= self.expected:
                return
            if self.delivered != last:
                last, since = self.delivered, time.monotonic()
            elif time.monotonic() - since > self.cfg.drain:
                return
            await asyncio.sleep(0.05)

    # -- the run

    async def run(self, watch: ProcWatch, deadline: float) -> dict:
        cfg = self.cfg
        n_conv = cfg.conversations
        for c in range(cfg.clients):
            self.socks.append(Sock(c, c % n_conv, c // n_conv))
        s_before = watch.sample()
        sem = asyncio.Semaphore(cfg.connect_concurrency)
        t0 = time.monotonic()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(
                asyncio.gather(*(self.open_one(s, sem) for s in self.socks)),
                max(1.0, deadline - time.monotonic()),
            )
        connect_s = time.monotonic() - t0
        await asyncio.sleep(cfg.hold)
        s_idle = watch.sample()
        ready = set(self.ready)
        senders = [s for s in self.socks[: cfg.senders] if s in ready]
        go = time.monotonic() + 0.2
        stop = go + (cfg.duration if senders else 0.0)
        self.go_ns = int(go * 1e9)
        self.stop_ns = int(stop * 1e9)
        await asyncio.sleep(max(0.0, go - time.monotonic()))
        if senders:
            print(f"# sending: {len(senders)} senders, {len(self.ready)} sockets", file=sys.stderr)
            sys.stderr.flush()
        cpu_c0 = time.process_time()
        s_go = watch.sample()
        timed_out = False
        if senders:
            work = self.sender_open if cfg.rate > 0 else self.sender_closed
            try:
                await asyncio.wait_for(
                    asyncio.gather(*(work(s, go, stop) for s in senders)),
                    max(1.0, deadline - time.monotonic()),
                )
            except TimeoutError:
                timed_out = True
        # CPU of the send window: sampled when it closes (closed-loop senders may finish
        # their last in-flight message slightly after it).
        await asyncio.sleep(max(0.0, stop - time.monotonic()))
        s_stop = watch.sample()
        cpu_c1 = time.process_time()
        t_stop = time.monotonic()
        if senders:
            await self.drain(deadline)
        s_end = watch.sample()
        window_s = max(1e-9, t_stop - go)
        self.stopping = True
        res = self.report(
            connect_s, window_s, timed_out, s_before, s_idle, s_go, s_stop, s_end, senders
        )
        res["client_cpu_util"] = r2((cpu_c1 - cpu_c0) / window_s) if senders else None
        res["live"] = {  # --typing / --receipts: what was sent, and the frames they caused
            "typing": cfg.typing,
            "receipts": cfg.receipts,
            "typing_sent": self.typing_sent,
            "receipts_sent": self.receipts_sent,
            "frames": self.live_frames,
        }
        machine = res["procs"].get("machine")
        if machine:  # busy CPU not explained by the sampled processes: other people's work
            known = sum(v.get("cpu_util") or 0 for k, v in res["procs"].items() if k != "machine")
            machine["other_cpu_util"] = r2(machine["cpu_util"] - known - res["client_cpu_util"])
        await self.close_all()
        return res

    async def close_all(self) -> None:
        sem = asyncio.Semaphore(200)

        async def close(s: Sock) -> None:
            async with sem:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(s.ws.close(), 2)

        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(
                asyncio.gather(*(close(s) for s in self.socks if s.ws is not None)), 15
            )

    def report(
        self, connect_s, window_s, timed_out, s_before, s_idle, s_go, s_stop, s_end, senders
    ):
        cfg = self.cfg
        lat = sorted(x / 1e6 for x in self.lat_ns)
        hs = sorted(self.handshake_ms)
        js = sorted(self.join_ms)
        lag = sorted(self.sched_lag_ms)
        est = len(self.ready)
        lost = sum(v for v in self.remaining.values() if v > 0)
        procs = {}
        for name in s_before:
            b, i, g, st, e = (x.get(name, {}) for x in (s_before, s_idle, s_go, s_stop, s_end))
            if name == "machine":
                if g and st and senders:
                    p = {"cpu_util": r2((st["cpu_s"] - g["cpu_s"]) / window_s)}
                    procs[name] = p
                continue
            p = {
                "rss_before_mib": r2(b.get("rss_kib", 0) / 1024, 1) if b else None,
                "rss_connected_mib": r2(i.get("rss_kib", 0) / 1024, 1) if i else None,
                "rss_end_mib": r2(e.get("rss_kib", 0) / 1024, 1) if e else None,
            }
            if b and i and est:
                p["rss_per_conn_kib"] = r2((i["rss_kib"] - b["rss_kib"]) / est, 1)
            if g and st and senders:
                cpu = st["cpu_s"] - g["cpu_s"]
                p["cpu_window_s"] = r2(cpu, 3)
                p["cpu_util"] = r2(cpu / window_s)
                p["cpu_us_per_delivery"] = r2(cpu * 1e6 / max(1, self.in_window), 1)
            procs[name] = p
        buckets = [self.buckets.get(k, 0) for k in range(int(window_s))]
        # latency over time, in 10 s slices of the send window: steady queueing or stalls?
        slices: dict[int, list[float]] = {}
        for t, v in zip(self.recv_ns, self.lat_ns, strict=True):
            slices.setdefault(max(0, (t - self.go_ns) // 10_000_000_000), []).append(v / 1e6)
        lat_slices = []
        for k in sorted(slices):
            v = sorted(slices[k])
            lat_slices.append([k * 10, len(v), r2(pct(v, 50)), r2(pct(v, 99)), r2(v[-1])])
        return {
            "label": cfg.label,
            "protocol": cfg.protocol,
            "url": cfg.url,
            "clients": cfg.clients,
            "conversations": cfg.conversations,
            "senders": len(senders),
            "mode": "idle"
            if not senders
            else (
                f"open-loop {cfg.rate}/s per sender" if cfg.rate else f"closed-loop w{cfg.window}"
            ),
            "duration_s": cfg.duration if senders else 0,
            "established": est,
            "connect_failed": cfg.clients - est,
            "connect_errors": self.connect_errors,
            "join_errors": self.join_errors,
            "connect_s": r2(connect_s),
            "handshake_p50_ms": r2(pct(hs, 50)),
            "handshake_p99_ms": r2(pct(hs, 99)),
            "join_p50_ms": r2(pct(js, 50)),
            "join_p99_ms": r2(pct(js, 99)),
            "sent": self.sent,
            "send_rate": r2(self.sent / window_s, 1) if senders else None,
            "send_errors": self.send_errors,
            "status_sent": self.status_sent,
            "status_duplicate": self.status_dup,
            "status_failed": self.status_failed,
            "errors": self.errors,
            "expected": self.expected,
            "delivered": self.delivered,
            "lost": lost,
            "dups": self.dups,
            "unexpected": self.unexpected,
            "foreign": self.foreign,
            "other_frames": self.other_frames,
            "dropped": self.dropped,
            "close_codes": self.close_codes if self.dropped else {},
            "ack_timeouts": self.ack_timeouts,
            "window_s": r2(window_s),
            "deliveries_per_s": r2(self.in_window / window_s, 1) if senders else None,
            "deliveries_per_s_min_1s": min(buckets) if buckets else None,
            "deliveries_per_s_max_1s": max(buckets) if buckets else None,
            "lat_p50_ms": r2(pct(lat, 50)),
            "lat_p95_ms": r2(pct(lat, 95)),
            "lat_p99_ms": r2(pct(lat, 99)),
            "lat_max_ms": r2(lat[-1]) if lat else None,
            "sched_lag_p99_ms": r2(pct(lag, 99)),
            "lat_by_10s": lat_slices,  # [start s, n, p50, p99, max]
            "timed_out": timed_out,
            "procs": procs,
        }


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--url", default="ws://127.0.0.1:8190/ws/chat/", help="${room} is substituted")
    ap.add_argument("--protocol", choices=["parley", "tutorial"], default="parley")
    ap.add_argument("--tokens-file", help="parley: one access JWT per line (setup_data.py)")
    ap.add_argument("--conversations-file", help="parley: one conversation id per line")
    ap.add_argument("--clients", type=int, default=1000, help="sockets (C)")
    ap.add_argument("--conversations", type=int, default=500, help="conversations (R)")
    ap.add_argument("--senders", type=int, default=None, help="default: one per conversation")
    ap.add_argument("--rate", type=float, default=0.5, help="per sender msgs/s; 0 = closed loop")
    ap.add_argument("--duration", type=float, default=60.0, help="send window, seconds")
    ap.add_argument("--window", type=int, default=1, help="closed loop: messages in flight")
    ap.add_argument("--ack-timeout", type=float, default=5.0)
    ap.add_argument("--text-bytes", type=int, default=64)
    ap.add_argument("--connect-concurrency", type=int, default=50)
    ap.add_argument("--connect-timeout", type=float, default=20.0)
    ap.add_argument("--hold", type=float, default=1.0, help="idle seconds after joining")
    ap.add_argument("--drain", type=float, default=3.0, help="give up after this long idle")
    ap.add_argument("--timeout", type=float, default=180.0, help="hard limit, seconds")
    ap.add_argument("--pid", action="append", default=[], help="NAME=PID to sample (repeat)")
    ap.add_argument("--comm", action="append", default=[], help="NAME=COMM: all such processes")
    ap.add_argument("--pg-db", help="also sample the PostgreSQL backends of this database")
    ap.add_argument("--pg-dsn", default="postgres://postgres@127.0.0.1:5432/postgres")
    ap.add_argument("--renice-pg", type=int, help="nice value for those backends (root)")
    ap.add_argument("--loop", choices=["auto", "uvloop", "asyncio"], default="auto")
    ap.add_argument("--label", default="")
    ap.add_argument(
        "--typing",
        action="store_true",
        help="parley: type each message as the browser client (composer.js) does: typing:start"
        "\n(re-sent at most every 3 s while typing; open loop: 1 s, at most half the"
        "\ninterval, before the send; closed loop: just before it), then typing:stop and"
        "\nmessage:send (submitting ends the typing)",
    )
    ap.add_argument(
        "--receipts",
        action="store_true",
        help="parley: receipts as the browser client (main.js) sends them: a message from"
        "\nsomeone else schedules a flush 400 ms later (unless one is pending), which sends"
        "\nmessage:delivered up to the newest message from others and message:read up to"
        "\nthe newest message, each only if it moved (page visible, scrolled to the bottom)",
    )
    ap.add_argument("--json-out", help="append the JSON result line to this file")
    cfg = ap.parse_args(argv)
    if cfg.senders is None:
        cfg.senders = min(cfg.conversations, cfg.clients)
    cfg.senders = min(cfg.senders, cfg.clients)
    if cfg.clients > 2 * cfg.conversations:
        ap.error("at most 2 sockets per conversation (two-person conversations)")
    host = urlsplit(cfg.url.replace("${room}", "x")).hostname
    if host not in LOOPBACK:
        ap.error(f"refusing non-loopback host {host!r}")
    if cfg.protocol == "parley" and not (cfg.tokens_file and cfg.conversations_file):
        ap.error("--protocol parley needs --tokens-file and --conversations-file")
    return cfg


def read_lines(path: str | None) -> list[str] | None:
    if not path:
        return None
    with open(path) as f:
        return [line.strip() for line in f if line.strip()]


def main(argv: list[str] | None = None) -> int:
    cfg = parse_args(argv)
    t_start = time.monotonic()
    deadline = t_start + cfg.timeout - 5.0
    tokens = read_lines(cfg.tokens_file)
    conv_ids = read_lines(cfg.conversations_file)
    if conv_ids is not None and len(conv_ids) < cfg.conversations:
        sys.exit(f"{cfg.conversations_file} has {len(conv_ids)} ids, need {cfg.conversations}")
    if tokens is not None and len(tokens) < 2 * cfg.conversations:
        sys.exit(f"{cfg.tokens_file} has {len(tokens)} tokens, need {2 * cfg.conversations}")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(max(hard, 0) if hard != resource.RLIM_INFINITY else 65536, 65536)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))

    def hard_stop(*_):
        print(json.dumps({"label": cfg.label, "error": "hard timeout"}), flush=True)
        os._exit(2)

    signal.signal(signal.SIGALRM, hard_stop)
    signal.alarm(int(cfg.timeout) + 1)

    pids = {}
    for spec in cfg.pid:
        name, _, pid = spec.partition("=")
        pids[name or pid] = int(pid)
    comms = {}
    for spec in cfg.comm:
        name, _, comm = spec.partition("=")
        comms[name or comm] = comm
    pg = PgBackends(cfg.pg_dsn, cfg.pg_db, cfg.renice_pg) if cfg.pg_db else None
    watch = ProcWatch(pids, comms, pg)
    load = Load(cfg, tokens, conv_ids)

    use_uvloop = cfg.loop == "uvloop"
    if cfg.loop == "auto":
        try:
            import uvloop

            use_uvloop = True
        except ImportError:
            use_uvloop = False
    coro = load.run(watch, deadline)
    if use_uvloop:
        import uvloop

        res = uvloop.run(coro)
    else:
        res = asyncio.run(coro)
    signal.alarm(0)
    res["loop"] = "uvloop" if use_uvloop else "asyncio"
    res["wall_s"] = r2(time.monotonic() - t_start)
    line = json.dumps(res)
    if cfg.json_out:
        with open(cfg.json_out, "a") as f:
            f.write(line + "\n")
    print(line, flush=True)
    srv = json.dumps(res["procs"])
    print(
        f"# {res['label']}: {res['established']}/{cfg.clients} sockets in {res['connect_s']}s "
        f"| sent {res['sent']} ({res['send_rate']}/s) | delivered {res['delivered']}/"
        f"{res['expected']} lost {res['lost']} dups {res['dups']} dropped {res['dropped']} "
        f"| {res['deliveries_per_s']} deliv/s | p50/p95/p99/max {res['lat_p50_ms']}/"
        f"{res['lat_p95_ms']}/{res['lat_p99_ms']}/{res['lat_max_ms']} ms | client cpu "
        f"{res['client_cpu_util']} | {srv}",
        file=sys.stderr,
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
