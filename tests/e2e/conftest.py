"""End-to-end tests: headless Chromium (Debian's, driven by Playwright for Python)
against a real daphne process on a scratch PostgreSQL database and the real Redis layer.

The server runs as in production: DEBUG off, static files collected into a manifest
and served by whitenoise, the strict Content-Security-Policy on. Character replies come
from the offline responder, streamed fast (PARLEY_OFFLINE_WORDS_PER_S).

Chromium is never downloaded (`playwright install` is not used): the project's scripts
install Debian's package. Without it the tests fail under CI=true and skip elsewhere.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.e2e.seed import PASSWORD
from tests.servers import BIN, ROOT, ScratchDatabase, Server, manage, start_daphne

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

CHROMIUM = Path(os.environ.get("PARLEY_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    # A fake microphone (a beeping tone) for voice messages, granted without a prompt.
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
]
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def _require(condition: bool, why: str) -> None:
    if condition:
        return
    if _in_ci():
        pytest.fail(f"{why} (CI=true: the end-to-end tests must run)", pytrace=False)
    pytest.skip(why)


@dataclass
class Site:
    server: Server
    db: ScratchDatabase
    env: dict[str, str]
    seeded: dict
    console: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.server.http

    async def rows(self, query: str, params: tuple | list = ()) -> list[tuple]:
        return await self.db.rows(query, params)

    def query(self, query: str, params: tuple | list = ()) -> list[tuple]:
        import psycopg

        with psycopg.connect(self.db.url, autocommit=True, connect_timeout=10) as conn:
            return conn.execute(query, params).fetchall()


def _server_env(db: ScratchDatabase, static_root: Path) -> dict[str, str]:
    run = uuid.uuid4().hex[:8]
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("ANTHROPIC_", "PARLEY_", "THROTTLE_"))
    }
    env.update(
        {
            "DATABASE_URL": db.url,
            "REDIS_URL": os.environ["REDIS_URL"],
            # As in production: hashed static files served by whitenoise, CSP on.
            "DEBUG": "0",
            "SECRET_KEY": f"e2e-{uuid.uuid4().hex}",
            "STATIC_ROOT": str(static_root),
            "MEDIA_ROOT": str(static_root.parent / "media"),
            # Plain http on 127.0.0.1: no TLS redirect, cookies without `Secure`.
            "SECURE_SSL_REDIRECT": "0",
            "SESSION_COOKIE_SECURE": "0",
            "CSRF_COOKIE_SECURE": "0",
            "SECURE_HSTS_SECONDS": "0",
            "ALLOWED_HOSTS": "127.0.0.1,localhost",
            "CHANNEL_LAYER_PREFIX": f"parley-e2e-{run}",
            "CACHE_KEY_PREFIX": f"parley-e2e-{run}",
            # The offline responder, fast enough for a quick suite, slow enough to see
            # the text grow over several frames.
            "ANTHROPIC_API_KEY": "",
            "PARLEY_OFFLINE_WORDS_PER_S": "40",
            "THROTTLE_SEND": "",
            "DJANGO_SETTINGS_MODULE": "config.settings",
            "PYTHONUNBUFFERED": "1",
            "LOG_LEVEL": "WARNING",
        }
    )
    return env


@pytest.fixture(scope="package")
def site(tmp_path_factory) -> Iterator[Site]:
    _require(CHROMIUM.exists(), f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    db = ScratchDatabase(os.environ["DATABASE_URL"])
    db.create()
    server = None
    try:
        work = tmp_path_factory.mktemp("e2e")
        env = _server_env(db, work / "static")
        manage(env, "migrate", "--noinput", "-v0", timeout=120)
        manage(env, "collectstatic", "--noinput", "-v0", timeout=120)
        done = subprocess.run(
            [str(BIN / "python"), "-m", "tests.e2e.seed"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        seeded = json.loads(done.stdout.strip().splitlines()[-1])
        server = start_daphne("e2e", env=env, log_dir=work, timeout=30)
        yield Site(server=server, db=db, env=env, seeded=seeded)
    finally:
        if server is not None:
            server.stop()
        db.drop()


@pytest.fixture(scope="package")
def browser(site):
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:  # pragma: no cover - dev extras missing
        _require(False, "playwright is not installed (pip install -e '.[dev]')")
    with sync_playwright() as playwright:
        # Playwright gives every launch a fresh, empty profile (user-data-dir).
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(autouse=True)
def server_health(site) -> Iterator[None]:
    """After each test the server still runs and logged no traceback meanwhile."""
    mark = site.server.mark()
    yield
    output = site.server.output(since=mark)
    assert site.server.process.poll() is None, f"the server died:\n{output}"
    assert "Traceback" not in output, f"the server logged an error:\n{output}"


class Pages:
    """Browser contexts (one per person, like separate devices), each logged in through
    the real log-in form once; every page records console errors and CSP violations."""

    def __init__(self, site: Site, browser, tmp: Path) -> None:
        self.site = site
        self.browser = browser
        self.tmp = tmp
        self.contexts = []
        self.problems: list[str] = []
        self.allowed: list[str] = ["WebSocket"]  # sockets the tests drop on purpose

    def allow(self, text: str) -> None:
        """Console errors containing `text` are expected (a test that goes offline)."""
        self.allowed.append(text)

    def context(self, username: str | None = None, *, viewport=DESKTOP, **options):
        context = self.browser.new_context(
            base_url=self.site.url,
            viewport=viewport,
            locale="en-US",
            timezone_id="UTC",
            **options,
        )
        context.set_default_timeout(10_000)
        self.contexts.append(context)
        if username:
            page = self.page(context)
            log_in(page, username)
            page.close()
        return context

    def page(self, context):
        page = context.new_page()
        page.on(
            "console",
            lambda m: m.type == "error" and self.problems.append(f"console: {m.text}"),
        )
        page.on("pageerror", lambda e: self.problems.append(f"page error: {e}"))
        return page

    def close(self) -> None:
        for context in self.contexts:
            context.close()


def log_in(page, username: str, password: str = PASSWORD) -> None:
    page.goto("/accounts/login/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url("**/")
    assert page.locator(".me-name").inner_text() != ""


@pytest.fixture
def pages(site, browser, tmp_path) -> Iterator[Pages]:
    pages = Pages(site, browser, tmp_path)
    try:
        yield pages
    finally:
        pages.close()
    # A page that broke (a script error, a CSP violation, a failed module) fails the
    # test, whatever it asserted.
    problems = [p for p in pages.problems if not any(a in p for a in pages.allowed)]
    assert not problems, "\n".join(problems)


@pytest.fixture(scope="session")
def screenshots_dir() -> Path:
    path = ROOT / "docs" / "screenshots"
    path.mkdir(parents=True, exist_ok=True)
    return path
