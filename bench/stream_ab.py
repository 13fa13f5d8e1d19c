#!/usr/bin/env python3
"""Interleaved A/B of the character-reply benchmark (bench/stream_load.py).

    .venv/bin/python bench/stream_ab.py --base 1571f20 --runs 2 -- \\
        --clients 1 --rounds 20 --pause 0.5 --timeout 220 --redis-db 13

These machines drift over minutes (the same code gave a p95 of 63 ms and of 25 ms within
twenty minutes), so two versions compare only when their runs alternate. This runs the
driver of this checkout against `--base` (a commit, extracted with `git archive`) and
`--head` (a commit, or this work tree as it is: the default), alternately, `--runs`
times each, the side that goes first swapping every round. Each run holds
/tmp/parley-bench.lock, as every benchmark here does. Everything after `--` goes to
stream_load.py. Prints each run and the medians of each side; appends the summaries to
bench/out/ab/results.jsonl.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
OUT = HERE / "out" / "ab"
PY = str(ROOT / ".venv" / "bin" / "python")
LOCK = "/tmp/parley-bench.lock"


def log(msg: str) -> None:
    print(f"[ab {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def tree_of(rev: str) -> Path:
    """ROOT for the work tree; else the commit's files in bench/out/ab/src-<sha>, with this
    checkout's driver and virtualenv, so that only the code under test differs."""
    if rev == "worktree":
        return ROOT
    sha = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--verify", f"{rev}^{{commit}}"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    if not sha:
        raise SystemExit(f"{rev}: no such commit")
    dest = OUT / f"src-{sha[:12]}"
    if not dest.exists():
        tmp = OUT / f"tmp-{os.getpid()}"
        tmp.mkdir(parents=True)
        archive = subprocess.run(
            ["git", "-C", str(ROOT), "archive", sha], capture_output=True, check=True
        )
        subprocess.run(["tar", "-x", "-C", str(tmp)], input=archive.stdout, check=True)
        (tmp / ".venv").symlink_to(ROOT / ".venv")
        tmp.rename(dest)
    (dest / "bench").mkdir(exist_ok=True)
    (dest / "bench" / "stream_load.py").write_bytes((HERE / "stream_load.py").read_bytes())
    return dest


def run_once(tree: Path, args: list[str]) -> dict:
    """One stream_load run under the benchmark lock; its JSON summary."""
    with open(LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        done = subprocess.run(
            [PY, str(tree / "bench" / "stream_load.py"), *args],
            cwd=tree,
            capture_output=True,
            text=True,
        )
    out = done.stdout
    start = out.find("\n{")
    if start < 0:
        raise SystemExit(f"stream_load printed no summary:\n{out[-2000:]}\n{done.stderr[-2000:]}")
    return json.loads(out[start + 1 :])


def row(side: str, n: int, s: dict) -> str:
    d, ack = s["added_first_delta_ms"], s["send_to_ack_ms"]
    return (
        f"| {side} | {n} | {d['p50']} | {d['p95']} | {d['p99']} | {ack['p50']} "
        f"| {s['cpu_ms_per_reply']} | {s['complete']}/{s['sent']} |"
    )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ours, theirs = (
        (argv[: argv.index("--")], argv[argv.index("--") + 1 :]) if "--" in argv else (argv, [])
    )
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", required=True, help="the code before: a commit")
    ap.add_argument("--head", default="worktree", help="the code after: a commit or worktree")
    ap.add_argument("--runs", type=int, default=2, help="runs of each side")
    a = ap.parse_args(ours)
    if "--append-doc" in theirs:
        raise SystemExit("--append-doc: not in an A/B (record the table this prints)")
    OUT.mkdir(parents=True, exist_ok=True)
    trees = {"base": tree_of(a.base), "head": tree_of(a.head)}
    names = {"base": a.base, "head": a.head}
    results: dict[str, list[dict]] = {"base": [], "head": []}
    for n in range(1, a.runs + 1):
        for side in ("base", "head") if n % 2 else ("head", "base"):
            log(f"run {n} of {side} ({names[side]})")
            summary = run_once(trees[side], theirs)
            summary.update(ab_side=side, ab_rev=names[side], ab_run=n)
            results[side].append(summary)
            with open(OUT / "results.jsonl", "a") as fh:
                fh.write(json.dumps(summary) + "\n")
            log(row(side, n, summary))
    print()
    print(f"stream_load.py {' '.join(theirs)}")
    print()
    print(
        "| code | run | added p50 | p95 | p99 (ms) | message:status p50 (ms) "
        "| CPU/reply (ms) | complete |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for side in ("base", "head"):
        for s in results[side]:
            print(row(f"{side} ({names[side]})", s["ab_run"], s))
    for side in ("base", "head"):
        rs = results[side]

        def med(key: str, sub: str | None = None, rs=rs) -> float:
            return statistics.median(r[key][sub] if sub else r[key] for r in rs)

        print(
            f"median {side}: added p50 {med('added_first_delta_ms', 'p50')}, "
            f"p95 {med('added_first_delta_ms', 'p95')} ms; "
            f"CPU per reply {med('cpu_ms_per_reply')} ms"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
