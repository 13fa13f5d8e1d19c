#!/usr/bin/env python3
"""Parley benchmark driver: Parley and the peer reference servers, same load, one run.

    .venv/bin/python bench/run.py                    # the record: every scenario, every server
    .venv/bin/python bench/run.py --quick            # short durations, 2,000 idle sockets
    .venv/bin/python bench/run.py --scenarios saturation --servers parley --profile

What it does:
0. takes /tmp/parley-bench.lock (one run at a time on the machine) and copies the code
   under test to bench/out/src-* (--source: the work tree, a commit, or live);
1. a private redis-server on 127.0.0.1:--redis-port (default 6398, no persistence) pinned
   to CPU1; Parley uses its db 5 with CHANNEL_LAYER_PREFIX=parley-bench, the tutorial db 6
   (nothing touches the machine's shared Redis on 6379);
2. with --pg private (default) a throwaway PostgreSQL cluster on port 5433 pinned to
   CPU1 (--pg shared: the machine's, $BENCH_PG); in it a fresh database `parley_bench`
   (dropped, created, migrated), then bench/setup_data.py: 5,000 users, 2,500 two-person
   conversations, JWTs valid 2 h;
3. for every scenario and server: the server pinned to CPU0 (taskset -c 0, RLIMIT_NOFILE
   raised), a small warm-up, then bench/ws_load.py pinned to CPU1, sampling the server's,
   Redis's and PostgreSQL's CPU and RSS; the server is stopped by its PID afterwards.
   Parley runs under daphne with DEBUG=0 and the Redis pub/sub channel layer.

Servers: parley; tutorial (the canonical Channels tutorial chat from
/work/shared/peer-bench/peer/chatproj under daphne with the tutorial's
RedisChannelLayer, started exactly as its run_matrix.py does); tutorial-pubsub (the same
with RedisPubSubChannelLayer, the layer Parley uses); bare (bare `websockets` fan-out,
the physical limit). The peers need Django 6 / Python >= 3.12: a separate venv is made
for them in bench/out/peer-venv on first use (from PyPI).

Results: bench/out/results-<stamp>.jsonl (one line per run), and a Markdown summary
with the ratios in bench/out/summary-<stamp>.md (also printed).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
OUT = HERE / "out"
VENV = ROOT / ".venv"
PEER_VENV = OUT / "peer-venv"
PEER_BENCH = Path(os.environ.get("PEER_BENCH", "/work/shared/peer-bench"))
PEER = PEER_BENCH / "peer"
DB_NAME = "parley_bench"
LOCK_PATH = "/tmp/parley-bench.lock"
PG = os.environ.get("BENCH_PG", "postgres://postgres@127.0.0.1:5432")  # --pg shared
PG_PRIVATE_PORT = 5433  # --pg private: a throwaway cluster of our own
PG_PRIVATE_DIR = Path("/tmp/parley-bench-pg")
PG_BIN = Path("/usr/lib/postgresql/15/bin")
SECRET_KEY = "parley-bench-not-a-secret-0123456789-abcdefghijklmnopqrstuvwxyz"
TUTORIAL_REDIS_DB = 6
PARLEY_REDIS_DB = 5

SERVERS = {
    # name: (kind, port, url, extra env)
    "parley": ("parley", 8190, "ws://127.0.0.1:8190/ws/chat/", {}),
    "tutorial": ("daphne", 8191, "ws://127.0.0.1:8191/ws/chat/${room}/", {"CHAT_LAYER": "redis"}),
    "tutorial-pubsub": (
        "daphne",
        8192,
        "ws://127.0.0.1:8192/ws/chat/${room}/",
        {"CHAT_LAYER": "pubsub"},
    ),
    "bare": ("bare", 8193, "ws://127.0.0.1:8193/ws/chat/${room}/", {}),
    # Parley again, every client also typing and sending receipts as a real one does
    # (ws_load.py --typing --receipts): the cost of the live signals (issue 6).
    "parley+live": ("parley", 8190, "ws://127.0.0.1:8190/ws/chat/", {}),
    # Each half of the live load alone, to tell which costs what.
    "parley+typing": ("parley", 8190, "ws://127.0.0.1:8190/ws/chat/", {}),
    "parley+receipts": ("parley", 8190, "ws://127.0.0.1:8190/ws/chat/", {}),
}
LIVE_LOAD_ARGS = {
    "parley+live": ["--typing", "--receipts"],
    "parley+typing": ["--typing"],
    "parley+receipts": ["--receipts"],
}

SCENARIOS = {
    # name: (ws_load args, quick overrides)
    "steady": (
        [
            "--clients",
            "1000",
            "--conversations",
            "500",
            "--senders",
            "500",
            "--rate",
            "0.5",
            "--duration",
            "60",
        ],
        ["--duration", "15"],
    ),
    "saturation": (
        [
            "--clients",
            "1000",
            "--conversations",
            "500",
            "--senders",
            "500",
            "--rate",
            "0",
            "--window",
            "1",
            "--duration",
            "30",
        ],
        ["--duration", "10"],
    ),
    "idle": (
        ["--clients", "5000", "--conversations", "2500", "--senders", "0", "--hold", "5"],
        ["--clients", "2000", "--conversations", "1000", "--hold", "3"],
    ),
}


def log(msg: str) -> None:
    print(f"[run {time.strftime('%H:%M:%S')}] {msg}", flush=True)


NICE = 0  # --nice: scheduling priority of the bench's own processes


def pin(cpu: int, cmd: list[str]) -> list[str]:
    pinned = ["taskset", "-c", str(cpu), *cmd]
    return ["nice", "-n", str(NICE), *pinned] if NICE else pinned


def port_open(port: int, timeout: float = 30.0) -> bool:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.1)
    return False


def redis_cmd(port: int, *args: str) -> bytes:
    payload = f"*{len(args)}\r\n" + "".join(f"${len(a)}\r\n{a}\r\n" for a in args)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(payload.encode())
        data = s.recv(65536)
        if data.startswith(b"$"):
            n = int(data[1 : data.index(b"\r\n")])
            while len(data) < n + len(str(n)) + 5:
                more = s.recv(65536)
                if not more:
                    break
                data += more
        return data


def redis_info(port: int, section: str) -> dict[str, str]:
    text = redis_cmd(port, "INFO", section).decode(errors="replace")
    return dict(line.split(":", 1) for line in text.splitlines() if ":" in line and line[0] != "#")


def redis_commands(port: int) -> dict[str, int]:
    return {
        k[len("cmdstat_") :]: int(v.split(",")[0].split("=")[1])
        for k, v in redis_info(port, "commandstats").items()
        if k.startswith("cmdstat_")
    }


def raise_nofile() -> None:
    for want in (65536, resource.getrlimit(resource.RLIMIT_NOFILE)[1]):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, want))
            return
        except (ValueError, OSError):
            continue


def machine_busy(seconds: float = 2.0) -> float:
    """Busy CPUs (0..nproc) of the whole machine over `seconds`, from /proc/stat."""

    def busy() -> tuple[int, int]:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:8]]
        return sum(fields) - fields[3] - fields[4], sum(fields)

    b0, t0 = busy()
    time.sleep(seconds)
    b1, t1 = busy()
    return (os.cpu_count() or 1) * (b1 - b0) / max(1, t1 - t0)


def wait_quiet(limit_s: float, threshold: float = 0.25) -> float:
    """Wait up to limit_s for the machine to be quiet (other engineers' tests share it)."""
    t0 = time.monotonic()
    while True:
        b = machine_busy()
        if b < threshold or time.monotonic() - t0 > limit_s:
            if b >= threshold:
                log(f"machine still busy ({b:.2f} CPUs) after {limit_s:.0f}s: running anyway")
            return b
        log(f"machine busy ({b:.2f} CPUs): waiting")
        time.sleep(3)


def psql(sql: str, db: str = "postgres") -> str:
    r = subprocess.run(
        ["psql", f"{PG}/{db}", "-v", "ON_ERROR_STOP=1", "-Atqc", sql],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if r.returncode:
        raise RuntimeError(f"psql {sql!r}: {r.stderr.strip()}")
    return r.stdout.strip()


def stop(p: subprocess.Popen) -> None:
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)


class Bench:
    def __init__(self, a) -> None:
        self.a = a
        self.stamp = time.strftime("%Y%m%d-%H%M%S")
        self.results_path = OUT / f"results-{self.stamp}.jsonl"
        self.logdir = OUT / "logs"
        self.redis_proc: subprocess.Popen | None = None
        self.redis_pid: int | None = None
        self.results: list[dict] = []
        self.src = ROOT
        self.source: dict = {}

    # -- environment

    def parley_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            DATABASE_URL=f"{PG}/{DB_NAME}",
            REDIS_URL=f"redis://127.0.0.1:{self.a.redis_port}/{PARLEY_REDIS_DB}",
            CHANNEL_LAYER_PREFIX="parley-bench",
            CACHE_KEY_PREFIX="parley-bench",
            DEBUG="0",
            SECRET_KEY=SECRET_KEY,
            SECURE_SSL_REDIRECT="0",
            ALLOWED_HOSTS="127.0.0.1",
            LOG_LEVEL="WARNING",
            # The per-user send limit (60/min by default) would turn saturation sends
            # into `rate_limited` failures: the bench measures the chat path, not it.
            THROTTLE_SEND="",
            DJANGO_SETTINGS_MODULE="config.settings",
            PYTHONDONTWRITEBYTECODE="1",
        )
        for spec in self.a.parley_env:  # experiments: --parley-env KEY=VALUE
            key, _, value = spec.partition("=")
            env[key] = value
        return env

    def ensure_peer_venv(self) -> None:
        if (PEER_VENV / "bin" / "daphne").exists():
            return
        py = shutil.which("python3.12") or shutil.which("python3.13")
        for cand in ("3.12", "3.13"):
            root = Path.home() / ".pyenv" / "versions"
            found = sorted(root.glob(f"{cand}*/bin/python{cand}")) if root.is_dir() else []
            if found:
                py = str(found[-1])
                break
        if not py:
            raise SystemExit("the peer servers need Python >= 3.12 (Django 6); none found")
        log(f"creating {PEER_VENV} with {py} (Django 6, Channels, daphne, websockets, uvloop)")
        subprocess.run([py, "-m", "venv", str(PEER_VENV)], check=True)
        subprocess.run(
            [
                str(PEER_VENV / "bin" / "pip"),
                "install",
                "-q",
                "django>=6.0,<6.1",
                "channels>=4.3",
                "channels-redis>=4.3",
                "daphne>=4.2",
                "uvloop",
                "websockets>=15",
            ],
            check=True,
        )

    def snapshot(self) -> None:
        """Freeze the code under test: other engineers edit /work/main while we measure.
        --source HEAD: the last commit; worktree: tracked and untracked (not ignored) files
        as they are now; live: /work/main itself."""
        git = ["git", "-C", str(ROOT)]
        rev = self.a.source if self.a.source not in ("worktree", "live") else "HEAD"
        head = subprocess.run([*git, "rev-parse", rev], capture_output=True, text=True)
        head = head.stdout.strip()
        if not head:
            raise SystemExit(f"--source {rev}: no such commit")
        status = subprocess.run([*git, "status", "--short"], capture_output=True, text=True)
        dirty = [x for x in status.stdout.splitlines() if not x[3:].startswith("bench/")]
        mode = self.a.source
        self.source = {"mode": mode, "commit": head, "dirty_files": len(dirty)}
        if mode == "live":
            self.src = ROOT
            return
        if mode not in ("worktree", "live"):  # a commit
            self.source["dirty_files"] = 0
            dest = OUT / f"src-{head[:12]}"
            if not dest.exists():
                tmp = OUT / f"src-tmp-{self.stamp}"
                tmp.mkdir(parents=True)
                archive = subprocess.run([*git, "archive", head], capture_output=True, check=True)
                subprocess.run(["tar", "-x", "-C", str(tmp)], input=archive.stdout, check=True)
                tmp.rename(dest)
        else:
            dest = OUT / f"src-worktree-{self.stamp}"
            listed = subprocess.run(
                [*git, "ls-files", "-co", "--exclude-standard", "-z"], capture_output=True
            ).stdout.decode()
            for rel in filter(None, listed.split("\0")):
                if rel.startswith("bench/") or not (ROOT / rel).is_file():
                    continue
                (dest / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ROOT / rel, dest / rel)
        self.src = dest
        log(f"code under test: {mode} {head[:12]} ({len(dirty)} files dirty), copy in {dest}")

    def start_pg(self) -> None:
        """--pg private: a PostgreSQL cluster of our own (initdb in /tmp, port 5433, fsync
        and synchronous_commit on as in production) pinned to CPU1 beside the load
        generator. The machine's shared cluster also serves other people's tests, whose
        CREATE/DROP DATABASE and checkpoints stall our commits for seconds."""
        global PG
        if self.a.pg == "shared":
            return
        if port_open(PG_PRIVATE_PORT, 0.3):
            raise SystemExit(f"port {PG_PRIVATE_PORT} is in use: another private PostgreSQL?")
        bindir = Path(self.a.pg_bin)
        shutil.rmtree(PG_PRIVATE_DIR, ignore_errors=True)
        PG_PRIVATE_DIR.mkdir(parents=True)
        shutil.chown(PG_PRIVATE_DIR, "postgres")
        data = PG_PRIVATE_DIR / "data"
        as_pg = ["runuser", "-u", "postgres", "--"]
        subprocess.run(
            [
                *as_pg,
                str(bindir / "initdb"),
                "-D",
                str(data),
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--no-sync",
            ],
            check=True,
            capture_output=True,
        )
        opts = f"-p {PG_PRIVATE_PORT} -k {PG_PRIVATE_DIR} -c listen_addresses=127.0.0.1"
        opts += " -c max_connections=200"
        log_path = PG_PRIVATE_DIR / "postgres.log"
        cmd = [str(bindir / "pg_ctl"), "-D", str(data), "-o", opts, "-l", str(log_path)]
        # nice and taskset as root, then runuser: the postmaster and its backends inherit
        # both.
        subprocess.run(pin(1, [*as_pg, *cmd, "-w", "start"]), check=True, capture_output=True)
        self.pg_data = data
        PG = f"postgres://postgres@127.0.0.1:{PG_PRIVATE_PORT}"
        log(f"private PostgreSQL on port {PG_PRIVATE_PORT} (data in {data})")

    def stop_pg(self) -> None:
        data = getattr(self, "pg_data", None)
        if data is None:
            return
        subprocess.run(
            [
                "runuser",
                "-u",
                "postgres",
                "--",
                str(Path(self.a.pg_bin) / "pg_ctl"),
                "-D",
                str(data),
                "-m",
                "fast",
                "-w",
                "stop",
            ],
            capture_output=True,
            timeout=60,
        )
        shutil.rmtree(PG_PRIVATE_DIR, ignore_errors=True)

    def start_redis(self) -> None:
        port = self.a.redis_port
        try:
            redis_cmd(port, "PING")
            log(f"using the redis-server already on port {port}")
        except OSError:
            cmd = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
            cmd += ["--appendonly", "no", "--loglevel", "warning", "--maxclients", "20000"]
            with open(self.logdir / "redis.log", "a") as logf:
                self.redis_proc = subprocess.Popen(
                    pin(1, cmd), stdout=logf, stderr=subprocess.STDOUT, start_new_session=True
                )
            if not port_open(port, 10):
                raise SystemExit(f"redis-server did not start on port {port}") from None
        self.redis_pid = int(redis_info(port, "server")["process_id"])

    def setup_db(self) -> None:
        if self.a.keep_db and psql(f"SELECT 1 FROM pg_database WHERE datname='{DB_NAME}'"):
            log(f"keeping database {DB_NAME}")
            if (OUT / "tokens.txt").exists():
                return
        else:
            log(f"fresh database {DB_NAME}")
            psql(f"DROP DATABASE IF EXISTS {DB_NAME} WITH (FORCE)")
            psql(f"CREATE DATABASE {DB_NAME}")
        env = self.parley_env()
        py = str(VENV / "bin" / "python")
        subprocess.run(
            [py, "manage.py", "migrate", "--noinput", "-v0"], cwd=self.src, env=env, check=True
        )
        subprocess.run(
            [
                py,
                str(HERE / "setup_data.py"),
                "--users",
                "5000",
                "--conversations",
                "2500",
                "--out",
                str(OUT),
                "--root",
                str(self.src),
            ],
            cwd=self.src,
            env=env,
            check=True,
        )

    # -- servers

    def start_server(self, name: str) -> subprocess.Popen:
        kind, port, _, extra = SERVERS[name]
        if port_open(port, 0.3):  # someone else's server: do not measure it
            raise RuntimeError(f"port {port} is already in use; is another bench running?")
        if kind == "parley":
            env = self.parley_env()
            env.update(extra)  # a --variant's settings
            cmd = [str(VENV / "bin" / "python"), "-m", "config.server", "-v", "0"]
            cmd += ["-b", "127.0.0.1", "-p", str(port), "config.asgi:application"]
            cwd = self.src
        else:
            env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1", **extra)
            env["CHAT_REDIS_URL"] = f"redis://127.0.0.1:{self.a.redis_port}/{TUTORIAL_REDIS_DB}"
            if kind == "daphne":
                cmd = [str(PEER_VENV / "bin" / "daphne"), "-v", "0", "-b", "127.0.0.1"]
                cmd += ["-p", str(port), "chatproj.asgi:application"]
            else:
                cmd = [str(PEER_VENV / "bin" / "python"), str(PEER / "bare_ws_server.py")]
                cmd += ["--port", str(port)]
            cwd = PEER / "chatproj"
        with open(self.logdir / f"server-{name}.log", "a") as logf:
            p = subprocess.Popen(
                pin(0, cmd),
                cwd=cwd,
                env=env,
                stdout=logf,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=raise_nofile,
            )
        if not port_open(port):
            stop(p)
            raise RuntimeError(f"{name} did not open port {port}")
        return p

    def loadgen(self, name: str, args: list[str], label: str, pids: dict[str, int], timeout: int):
        kind, _, url, _ = SERVERS[name]
        cmd = [str(VENV / "bin" / "python"), str(HERE / "ws_load.py"), "--url", url]
        if kind == "parley":
            cmd += ["--tokens-file", str(OUT / "tokens.txt")]
            cmd += ["--conversations-file", str(OUT / "conversations.txt")]
        else:
            cmd += ["--protocol", "tutorial"]
        cmd += ["--timeout", str(timeout), "--label", label, *args]
        if label != "warmup":
            cmd += LIVE_LOAD_ARGS.get(name, [])
        for n, pid in pids.items():
            cmd += ["--pid", f"{n}={pid}"]
        if kind == "parley":
            cmd += ["--pg-db", DB_NAME, "--pg-dsn", f"{PG}/postgres"]
            if NICE:
                cmd += ["--renice-pg", str(NICE)]
        r = subprocess.run(
            pin(1, cmd),
            capture_output=True,
            text=True,
            timeout=timeout + 30,
            preexec_fn=raise_nofile,
        )
        if r.stderr.strip():
            sys.stderr.write(r.stderr[-3000:])
        line = next((x for x in r.stdout.splitlines() if x.startswith("{")), None)
        return json.loads(line) if line else {"label": label, "error": r.stderr[-1000:]}

    def messages_stored(self) -> int:
        return int(psql("SELECT count(*) FROM chat_message", DB_NAME))

    def one(self, scenario: str, name: str) -> dict:
        args, quick = SCENARIOS[scenario]
        args = args + (quick if self.a.quick else [])
        kind = SERVERS[name][0]
        label = f"{scenario}|{name}{self.a.tag if name == 'parley' else ''}"
        busy_before = wait_quiet(self.a.wait_quiet) if self.a.wait_quiet else machine_busy(1)
        p = self.start_server(name)
        try:
            warm = ["--clients", "20", "--conversations", "10", "--rate", "0"]
            warm += ["--duration", "2", "--hold", "0", "--drain", "1"]
            self.loadgen(name, warm, "warmup", {}, 40)
            if name == "tutorial":  # the core layer keeps state in Redis: start clean
                subprocess.run(
                    [
                        "redis-cli",
                        "-p",
                        str(self.a.redis_port),
                        "-n",
                        str(TUTORIAL_REDIS_DB),
                        "FLUSHDB",
                    ],
                    capture_output=True,
                )
            redis_cmd(self.a.redis_port, "CONFIG", "RESETSTAT")
            stored0 = self.messages_stored() if kind == "parley" else None
            pids = {"server": p.pid}
            if name != "bare":
                pids["redis"] = self.redis_pid
            r = self.loadgen(name, args, label, pids, self.a.timeout)
            r["redis_commands"] = {
                k: v
                for k, v in redis_commands(self.a.redis_port).items()
                if k not in ("config", "info", "select", "flushdb", "ping")
            }
            if kind == "parley":
                r["stored"] = self.messages_stored() - stored0
            r["server_alive"] = p.poll() is None
        finally:
            stop(p)
        other = r.get("procs", {}).get("machine", {}).get("other_cpu_util")
        r["noisy"] = other is not None and other > self.a.max_other_cpu
        r["source"] = self.source if kind == "parley" else None
        r["uptime_load"] = os.getloadavg()
        r["nice"] = NICE
        r["pg"] = self.a.pg
        r["machine_busy_before"] = round(busy_before, 2)
        with open(self.results_path, "a") as f:
            f.write(json.dumps(r) + "\n")
        self.results.append(r)
        return r

    def profile(self) -> None:
        """A Parley run under py-spy (pinned to CPU1, --nonblocking): --profile-server,
        --profile-scenario (default parley, saturation)."""
        spy = VENV / "bin" / "py-spy"
        if not spy.exists():
            log("py-spy not installed in .venv: no profile (.venv/bin/pip install py-spy)")
            return
        args, _quick = SCENARIOS[self.a.profile_scenario]
        args = [*args, "--duration", str(self.a.profile_seconds + 6)]
        name = self.a.profile_server  # parley, or parley+live: its load arguments too
        args += LIVE_LOAD_ARGS.get(name, [])
        p = self.start_server(name)
        gil = "-gil" if self.a.profile_gil else ""
        # profile[-summary]-gil-STAMP.txt for plain parley at saturation, as before
        what = f"{name.replace('+', '-')}-{self.a.profile_scenario}"
        tag = gil if what == "parley-saturation" else f"-{what}{gil}"
        raw = OUT / f"profile-{what}{gil}-{self.stamp}.txt"
        try:
            warm = ["--clients", "20", "--conversations", "10", "--rate", "0", "--duration", "2"]
            self.loadgen("parley", [*warm, "--hold", "0"], "warmup", {}, 40)
            _kind, _, url, _ = SERVERS["parley"]
            cmd = [str(VENV / "bin" / "python"), str(HERE / "ws_load.py"), "--url", url]
            cmd += ["--tokens-file", str(OUT / "tokens.txt")]
            cmd += ["--conversations-file", str(OUT / "conversations.txt")]
            cmd += ["--timeout", str(self.a.timeout), "--label", f"profile|{name}", *args]
            lg = subprocess.Popen(
                pin(1, cmd), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
            for line in lg.stderr:  # profile the send window, not the connect phase
                if line.startswith("# sending"):
                    break
            time.sleep(2)
            rec = [str(spy), "record", "-p", str(p.pid), "-d", str(self.a.profile_seconds)]
            rec += ["-r", "100", "-f", "raw", "-o", str(raw), "--nonblocking"]
            if self.a.profile_gil:  # on-CPU only: samples of the thread holding the GIL
                rec.append("--gil")
            subprocess.run(pin(1, rec), capture_output=True, timeout=self.a.profile_seconds + 60)
            _out, err = lg.communicate(timeout=self.a.timeout + 30)
            sys.stderr.write(err[-2000:])
        finally:
            stop(p)
        if raw.exists():
            summary = fold_summary(raw, 25)
            (OUT / f"profile-summary{tag}-{self.stamp}.txt").write_text(summary)
            print(summary)

    def lock(self) -> None:
        """One bench run at a time on this machine: concurrent runs would share the
        database, the ports, the private Redis and the tokens file, and spoil each other."""
        import fcntl

        self.lockf = open(LOCK_PATH, "a+")  # noqa: SIM115 (held for the whole run)
        t0 = time.monotonic()
        while True:
            try:
                fcntl.flock(self.lockf, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() - t0 > self.a.lock_wait:
                    raise SystemExit(f"another bench run holds {LOCK_PATH}; gave up") from None
                if int(time.monotonic() - t0) % 60 == 0:
                    self.lockf.seek(0)
                    holder = self.lockf.read().strip()
                    log(f"another bench run holds {LOCK_PATH} ({holder}): waiting")
                time.sleep(1)
        self.lockf.seek(0)
        self.lockf.truncate()
        self.lockf.write(f"pid {os.getpid()} since {time.strftime('%H:%M:%S')}\n")
        self.lockf.flush()

    def run(self) -> int:
        a = self.a
        # Clean up (servers, Redis) on SIGTERM and on SIGINT, also when started in the
        # background, where the shell leaves SIGINT ignored.
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
        signal.signal(signal.SIGINT, signal.default_int_handler)
        self.lock()
        OUT.mkdir(parents=True, exist_ok=True)
        self.logdir.mkdir(parents=True, exist_ok=True)
        raise_nofile()
        for spec in a.variant:  # NAME:KEY=VALUE,KEY=VALUE -> server "parley[NAME]"
            vname, _, settings = spec.partition(":")
            pairs = re.split(r",(?=[A-Z][A-Z0-9_]*=)", settings)  # values may hold commas
            env = dict(kv.split("=", 1) for kv in pairs if kv)
            SERVERS[f"parley[{vname}]"] = ("parley", 8190, SERVERS["parley"][2], env)
            if vname.endswith("+live"):  # NAME+live: with the live load, as parley+live
                LIVE_LOAD_ARGS[f"parley[{vname}]"] = LIVE_LOAD_ARGS["parley+live"]
        servers = [s for s in a.servers.split(",") if s]
        scenarios = [s for s in a.scenarios.split(",") if s]
        for s in servers:
            if s not in SERVERS:
                raise SystemExit(f"unknown server {s}; known: {', '.join(SERVERS)}")
        for s in scenarios:
            if s not in SCENARIOS:
                raise SystemExit(f"unknown scenario {s}; known: {', '.join(SCENARIOS)}")
        if (os.cpu_count() or 1) < 2:
            raise SystemExit("needs 2 CPUs: server on CPU0, load generator and Redis on CPU1")
        if any(s != "parley" for s in servers):
            self.ensure_peer_venv()
        log(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()}")
        self.snapshot()
        self.start_redis()
        try:
            self.start_pg()
            self.setup_db()
            t0 = time.monotonic()
            for scenario in scenarios:
                for run in range(a.runs):
                    for name in servers:
                        if time.monotonic() - t0 > a.budget:
                            log(f"budget reached, skipping {scenario} {name}")
                            continue
                        for attempt in range(1 + a.retries):
                            log(f"{scenario} / {name} (run {run + 1}/{a.runs}, try {attempt + 1})")
                            try:
                                r = self.one(scenario, name)
                            except Exception as exc:
                                log(f"{scenario} / {name} failed: {exc}")
                                break
                            time.sleep(1)
                            if not r.get("noisy"):
                                break
                            other = r["procs"]["machine"]["other_cpu_util"]
                            log(f"noisy: other processes used {other} CPUs during the run")
            if a.profile:
                self.profile()
        finally:
            self.stop_pg()
            if self.redis_proc is not None:
                stop(self.redis_proc)
        md = summarize(self.results, quick=a.quick)
        (OUT / f"summary-{self.stamp}.md").write_text(md)
        print(md)
        log(f"results: {self.results_path}")
        return 0


# --------------------------------------------------------------------------- reports


def _fmt(v, nd: int = 1) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return str(int(v)) if v.is_integer() and abs(v) >= 10 else f"{v:.{nd}f}"
    return str(v)


def _table(header: list[str], rows: list[list]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(_fmt(c) for c in row) + " |" for row in rows]
    return "\n".join(out)


def _median(vals: list) -> float | None:
    vals = sorted(v for v in vals if isinstance(v, int | float))
    if not vals:
        return None
    n = len(vals)
    return vals[n // 2] if n % 2 else (vals[n // 2 - 1] + vals[n // 2]) / 2


def summarize(results: list[dict], quick: bool = False) -> str:
    groups: dict[tuple[str, str], list[dict]] = collections.defaultdict(list)
    for r in results:
        if "error" in r or "|" not in r.get("label", ""):
            continue
        scenario, _, server = r["label"].partition("|")
        groups[(scenario, server)].append(r)
    noisy_only = set()
    for key, rs in groups.items():  # runs disturbed by other people's work: last resort
        quiet = [r for r in rs if not r.get("noisy")]
        if quiet:
            groups[key] = quiet
        else:
            noisy_only.add(key)

    def med(scenario, server, fn):
        return _median([fn(r) for r in groups.get((scenario, server), [])])

    def srv(r, key):
        return r.get("procs", {}).get("server", {}).get(key)

    def proc(r, name, key):
        return r.get("procs", {}).get(name, {}).get(key)

    parts = [
        f"Runs: {len(results)}{' (quick)' if quick else ''}; medians where runs > 1; runs in"
        " which other processes used more CPU than --max-other-cpu are left out when a"
        " quieter run of the same cell exists (marked * when none does)."
    ]
    order = list(SERVERS)
    servers = sorted({s for _, s in groups}, key=lambda s: (order.index(s.split("[")[0]), s))
    for scenario in ("steady", "saturation"):
        names = [s for s in servers if (scenario, s) in groups]
        if not names:
            continue
        rows = []
        for s in names:
            rows.append(
                [
                    s + (" *" if (scenario, s) in noisy_only else ""),
                    med(scenario, s, lambda r: r["established"]),
                    med(scenario, s, lambda r: r["sent"]),
                    med(scenario, s, lambda r: r.get("stored")),
                    med(scenario, s, lambda r: r["deliveries_per_s"]),
                    med(scenario, s, lambda r: r["lat_p50_ms"]),
                    med(scenario, s, lambda r: r["lat_p95_ms"]),
                    med(scenario, s, lambda r: r["lat_p99_ms"]),
                    med(scenario, s, lambda r: r["lat_max_ms"]),
                    med(scenario, s, lambda r: r["lost"]),
                    med(scenario, s, lambda r: r["dups"]),
                    med(scenario, s, lambda r: r["dropped"]),
                    med(scenario, s, lambda r: r["status_failed"]),
                    med(scenario, s, lambda r: srv(r, "cpu_util")),
                    med(scenario, s, lambda r: srv(r, "cpu_us_per_delivery")),
                    med(scenario, s, lambda r: proc(r, "postgres", "cpu_us_per_delivery")),
                    med(scenario, s, lambda r: proc(r, "redis", "cpu_us_per_delivery")),
                    med(scenario, s, lambda r: r["client_cpu_util"]),
                    med(scenario, s, lambda r: proc(r, "machine", "other_cpu_util")),
                ]
            )
        parts.append(f"\n### {scenario}\n")
        parts.append(
            _table(
                [
                    "server",
                    "sockets",
                    "sent",
                    "stored",
                    "deliv/s",
                    "p50 ms",
                    "p95 ms",
                    "p99 ms",
                    "max ms",
                    "lost",
                    "dups",
                    "dropped",
                    "failed",
                    "srv CPU",
                    "srv us/deliv",
                    "pg us/deliv",
                    "redis us/deliv",
                    "client CPU",
                    "other CPU",
                ],
                rows,
            )
        )
        ours = [s for s in names if s.startswith("parley")]
        peers = [s for s in names if not s.startswith("parley")]
        if ours and peers:
            ratio_rows = []
            for mine in ours:
                p_tp = med(scenario, mine, lambda r: r["deliveries_per_s"])
                p_99 = med(scenario, mine, lambda r: r["lat_p99_ms"])
                p_us = med(scenario, mine, lambda r: srv(r, "cpu_us_per_delivery"))
                for s in peers:
                    tp = med(scenario, s, lambda r: r["deliveries_per_s"])
                    p99 = med(scenario, s, lambda r: r["lat_p99_ms"])
                    us = med(scenario, s, lambda r: srv(r, "cpu_us_per_delivery"))
                    ratio_rows.append(
                        [
                            f"{mine} / {s}",
                            f"{p_tp / tp:.2f}" if p_tp and tp else "-",
                            f"{p_99 / p99:.2f}" if p_99 and p99 else "-",
                            f"{p_us / us:.2f}" if p_us and us else "-",
                        ]
                    )
            parts.append(f"\nRatios, Parley / peer ({scenario}):\n")
            parts.append(
                _table(["pair", "deliv/s ratio", "p99 ratio", "server us/deliv ratio"], ratio_rows)
            )
        live_rows = []
        for live in (s for s in names if s.startswith("parley") and "+" in s):
            base = live.rpartition("+")[0]
            if base in names:
                row = [f"{live} / {base}"]
                for fn in (
                    lambda r: r["deliveries_per_s"],
                    lambda r: r["lat_p99_ms"],
                    lambda r: srv(r, "cpu_us_per_delivery"),
                ):
                    a, b = med(scenario, live, fn), med(scenario, base, fn)
                    row.append(f"{a / b:.2f}" if a and b else "-")
                live_rows.append(row)
        if live_rows:
            parts.append(f"\nRatios, with typing and receipts / without ({scenario}):\n")
            parts.append(
                _table(["pair", "deliv/s ratio", "p99 ratio", "server us/deliv ratio"], live_rows)
            )
    names = [s for s in servers if ("idle", s) in groups]
    if names:
        rows = []
        for s in names:
            rows.append(
                [
                    s,
                    med("idle", s, lambda r: r["established"]),
                    med("idle", s, lambda r: r["connect_failed"]),
                    med("idle", s, lambda r: r["connect_s"]),
                    med("idle", s, lambda r: r["handshake_p99_ms"]),
                    med("idle", s, lambda r: r["join_p99_ms"]),
                    med("idle", s, lambda r: srv(r, "rss_before_mib")),
                    med("idle", s, lambda r: srv(r, "rss_connected_mib")),
                    med("idle", s, lambda r: srv(r, "rss_per_conn_kib")),
                    med("idle", s, lambda r: r["dropped"]),
                ]
            )
        parts.append("\n### idle\n")
        parts.append(
            _table(
                [
                    "server",
                    "sockets",
                    "failed",
                    "connect s",
                    "handshake p99 ms",
                    "join p99 ms",
                    "RSS before MiB",
                    "RSS connected MiB",
                    "KiB/conn",
                    "dropped",
                ],
                rows,
            )
        )
    return "\n".join(parts) + "\n"


OWNERS = {
    "daphne",
    "twisted",
    "autobahn",
    "channels",
    "channels_redis",
    "redis",
    "asgiref",
    "django",
    "websockets",
    "msgpack",
    "txaio",
    "zope",
    "psycopg",
    "pydantic",
    "pydantic_core",
    "markdown",
    "nh3",
    "rest_framework",
    "rest_framework_simplejwt",
    "chat",
    "config",
    "accounts",
    "characters",
}


def _module(frame: str) -> str:
    m = re.search(r"\(([^()]+?):\d+\)$", frame) or re.search(r"\(([^()]+)\)$", frame)
    if not m:
        return "?"
    path = m.group(1)
    for marker in ("site-packages/", "/work/main/"):
        if marker in path:
            path = path.split(marker, 1)[1]
    return path.split("/")[0].replace(".py", "")


def fold_summary(path: Path, top: int = 25) -> str:
    """Samples by owning package, and the top self and inclusive functions, of a py-spy
    `-f raw` (collapsed stacks) profile."""
    owner: collections.Counter = collections.Counter()
    selfc: collections.Counter = collections.Counter()
    incl: collections.Counter = collections.Counter()
    total = 0
    with open(path) as f:
        lines_in = f.read().splitlines()
    for line in lines_in:
        stack, _, n = line.rstrip("\n").rpartition(" ")
        if not stack:
            continue
        n = int(n)
        total += n
        frames = stack.split(";")
        thread = "worker-thread" if any("concurrent/futures" in f for f in frames) else "loop"
        o = next((m for m in map(_module, reversed(frames)) if m in OWNERS), None)
        owner[f"{thread}:{o or 'stdlib:' + _module(frames[-1])}"] += n
        selfc[frames[-1]] += n
        for f in set(frames):
            incl[f] += n
    lines = [f"total samples: {total}", "", "== samples by owner (innermost known package)"]
    lines += [f"{100 * v / total:5.1f}%  {k}" for k, v in owner.most_common(top)]
    lines += ["", "== self time, top leaf functions"]
    lines += [f"{100 * v / total:5.1f}%  {k}" for k, v in selfc.most_common(top)]
    lines += ["", "== inclusive time, top functions"]
    lines += [f"{100 * v / total:5.1f}%  {k}" for k, v in incl.most_common(top + 20)]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--servers", default="parley,tutorial,tutorial-pubsub,bare")
    ap.add_argument("--scenarios", default="steady,saturation,idle")
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="short runs while iterating")
    ap.add_argument("--profile", action="store_true", help="also profile Parley with py-spy")
    ap.add_argument("--profile-gil", action="store_true", help="py-spy --gil (on-CPU only)")
    ap.add_argument("--profile-seconds", type=int, default=20)
    ap.add_argument(
        "--profile-server",
        default="parley",
        choices=["parley", "parley+live"],
        help="the server (and load) to profile; parley+live: with --typing --receipts",
    )
    ap.add_argument("--profile-scenario", default="saturation", choices=["steady", "saturation"])
    ap.add_argument("--wait-quiet", type=float, default=0, help="wait up to N s for quiet")
    ap.add_argument("--parley-env", action="append", default=[], help="KEY=VALUE for Parley")
    ap.add_argument("--tag", default="", help="label suffix for Parley runs, e.g. [variant]")
    ap.add_argument(
        "--source",
        default="worktree",
        help="code under test: a copy of the work tree (default), of a commit (HEAD, a sha),"
        " or 'live' (/work/main itself)",
    )
    ap.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME:KEY=VALUE,...",
        help="also run Parley with these settings as server parley[NAME] (add it to --servers)",
    )
    ap.add_argument("--lock-wait", type=float, default=3600, help="wait for another run, s")
    ap.add_argument(
        "--max-other-cpu",
        type=float,
        default=0.35,
        help="a run in which other processes used more CPUs than this is noisy",
    )
    ap.add_argument("--retries", type=int, default=2, help="reruns of a noisy run")
    ap.add_argument(
        "--nice",
        type=int,
        default=0,
        help="run server, load generator, Redis (and Parley's PostgreSQL backends) at this"
        " nice value, e.g. -10 while other people's tests load the machine (root)",
    )
    ap.add_argument(
        "--pg",
        choices=["private", "shared"],
        default="private",
        help="a throwaway PostgreSQL cluster of our own (default), or the machine's one"
        " ($BENCH_PG, default port 5432) with database parley_bench",
    )
    ap.add_argument("--pg-bin", default=str(PG_BIN), help="PostgreSQL's initdb and pg_ctl")
    ap.add_argument("--keep-db", action="store_true", help="reuse parley_bench if it exists")
    ap.add_argument("--redis-port", type=int, default=6398)
    ap.add_argument("--timeout", type=int, default=180, help="hard limit per load run, s")
    ap.add_argument("--budget", type=int, default=3600, help="start no run after this, s")
    ap.add_argument("--summarize", metavar="JSONL", help="print the summary of a results file")
    ap.add_argument("--fold-summary", metavar="RAW", help="summarise a py-spy raw profile")
    a = ap.parse_args(argv)
    global NICE
    NICE = a.nice
    if a.summarize:
        with open(a.summarize) as f:
            print(summarize([json.loads(x) for x in f if x.strip()]))
        return 0
    if a.fold_summary:
        print(fold_summary(Path(a.fold_summary)))
        return 0
    return Bench(a).run()


if __name__ == "__main__":
    sys.exit(main())
