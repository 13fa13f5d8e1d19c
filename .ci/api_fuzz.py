"""Fuzz the LIVE server's REST API from its own OpenAPI schema with schemathesis.

A daphne process serves Parley against a scratch PostgreSQL database (migrated, demo
characters seeded); a user signs up over REST, gets a JWT and opens a character
conversation; then `schemathesis run` sends generated requests, valid and invalid, to
every operation in /api/schema/ with that token, and fails on any 5xx, any response
that does not match the schema (body, status code, content type). Bounded: a fixed
number of examples per operation, a time limit for the whole run.

Usage (from the repository root, PostgreSQL and Redis up):
    DATABASE_URL=postgres://... REDIS_URL=redis://... .venv/bin/python .ci/api_fuzz.py
Extra arguments go to `schemathesis run` (e.g. `--max-examples 100`).
"""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from tests.servers import BIN, ScratchDatabase, manage, start_daphne  # noqa: E402

MAX_EXAMPLES = os.environ.get("SCHEMATHESIS_MAX_EXAMPLES", "50")
TIME_LIMIT_S = int(os.environ.get("SCHEMATHESIS_TIME_LIMIT_S", "170"))
CHECKS = ",".join(
    [
        "not_a_server_error",
        "response_schema_conformance",
        "status_code_conformance",
        "content_type_conformance",
    ]
)


def server_env(db: ScratchDatabase, media: Path) -> dict[str, str]:
    run = secrets.token_hex(4)
    env = {
        **os.environ,
        "DATABASE_URL": db.url,
        "REDIS_URL": os.environ["REDIS_URL"],
        "DEBUG": "0",
        "SECRET_KEY": secrets.token_urlsafe(40),
        "SECURE_SSL_REDIRECT": "0",
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "CHANNEL_LAYER_PREFIX": f"parley-fuzz-{run}",
        "CACHE_KEY_PREFIX": f"parley-fuzz-{run}",
        "MEDIA_ROOT": str(media),
        # Throttles would turn most generated requests into 429s (documented, but
        # then the code behind them goes untested); tests/ cover the throttles.
        "THROTTLE_AUTH": "100000/min",
        "THROTTLE_SEND": "100000/min",
        "THROTTLE_UPLOAD": "100000/min",
        "LOG_LEVEL": "ERROR",
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("ANTHROPIC_API_KEY", None)  # characters answer offline
    return env


def prepare_user(base: str) -> tuple[str, int, str]:
    """Sign up and in over REST, open a character conversation: (access token,
    conversation id, character slug)."""
    password = secrets.token_urlsafe(16)
    with httpx.Client(base_url=base, timeout=10) as http:
        signup = http.post("/api/auth/register/", json={"username": "fuzzer", "password": password})
        signup.raise_for_status()
        pair = http.post("/api/auth/token/", json={"username": "fuzzer", "password": password})
        pair.raise_for_status()
        access = pair.json()["access"]
        headers = {"Authorization": f"Bearer {access}"}
        slug = http.get("/api/characters/", headers=headers).json()[0]["slug"]
        opened = http.post("/api/conversations/", json={"character": slug}, headers=headers)
        opened.raise_for_status()
        return access, opened.json()["id"], slug


def config_file(directory: Path, *, conversation: int, slug: str) -> Path:
    """Real ids and slugs for path and body parameters part of the time, so that the
    fuzzing reaches past the 404s; generated ones the rest of the time."""
    path = directory / "schemathesis.toml"
    path.write_text(
        f"""
[dictionaries.conversations]
values = [{conversation}]

[dictionaries.slugs]
values = ["{slug}"]

[parameters]
"path.conversation_id" = {{ dictionary = "conversations", probability = 0.7 }}
"path.slug" = {{ dictionary = "slugs", probability = 0.7 }}
"body.character" = {{ dictionary = "slugs", probability = 0.5 }}
"""
    )
    return path


def _tally(output: str) -> tuple[int, int]:
    """(test cases passed, unique failures) from schemathesis' summary line:
    "N generated, N passed" or "N generated, N found N unique failures"."""
    generated = re.search(r"(\d+) generated", output)
    found = re.search(r"(\d+) found (\d+) unique failures?", output)
    total = int(generated.group(1)) if generated else 0
    if found:
        return total - int(found.group(1)), int(found.group(2))
    return total, 0


def main(extra: list[str]) -> int:
    db = ScratchDatabase(os.environ["DATABASE_URL"])
    db.create()
    server = None
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="parley-fuzz-") as tmp:
        tmp_path = Path(tmp)
        try:
            env = server_env(db, tmp_path / "media")
            manage(env, "migrate", "--noinput", "-v0", timeout=120)
            manage(env, "seed_demo")
            server = start_daphne("fuzz", env=env, log_dir=tmp_path)
            access, conversation, slug = prepare_user(server.http)
            config = config_file(tmp_path, conversation=conversation, slug=slug)
            command = [
                str(BIN / "schemathesis"),
                "--no-color",
                "--config-file",
                str(config),
                "run",
                f"{server.http}/api/schema/",
                "--checks",
                CHECKS,
                "--header",
                f"Authorization: Bearer {access}",
                "--max-examples",
                MAX_EXAMPLES,
                "--phases",
                "examples,coverage,fuzzing",
                "--workers",
                "2",
                "--request-timeout",
                "10",
                *extra,
            ]
            shown = [c if "Bearer" not in c else "'Authorization: Bearer …'" for c in command]
            print("$", " ".join(shown), flush=True)
            hooks = {"SCHEMATHESIS_HOOKS": "api_fuzz_hooks", "PYTHONPATH": str(HERE)}
            try:
                result = subprocess.run(
                    command,
                    cwd=tmp,
                    env={**os.environ, **hooks},
                    timeout=TIME_LIMIT_S,
                    capture_output=True,
                    text=True,
                    check=False,
                )
            except subprocess.TimeoutExpired as exc:
                print(exc.stdout or "", exc.stderr or "")
                print(f"schemathesis: over the {TIME_LIMIT_S} s limit")
                return 1
            print(result.stdout, result.stderr, sep="\n")
            logged = [
                line
                for line in server.output().splitlines()
                if "Traceback" in line or '" 500 ' in line or "Internal Server Error" in line
            ]
            if logged:
                print("Server errors logged:\n" + server.output()[-5000:])
            passed, failed = _tally(result.stdout)
            failed += len(logged) > 0 or (result.returncode != 0 and not failed)
            print(f"schemathesis: exit {result.returncode}, {time.monotonic() - started:.0f} s")
            # A plain closing line, as CI reads test runners' summaries.
            print(f"fuzz: {passed} passed, {failed} failed")
            return 0 if failed == 0 and result.returncode == 0 else 1
        finally:
            if server is not None:
                server.stop()
            db.drop()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
