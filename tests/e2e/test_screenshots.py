"""Screenshots of the main pages, at desktop and phone width, kept in docs/screenshots/.
A file is rewritten only when the page looks different (more than a sliver of pixels:
message times differ from run to run), so the committed pictures change when the pages
do. They are also checks: each page must render without a script error or a CSP
violation (the `pages` fixture) and with its main parts visible."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image, ImageChops
from playwright.sync_api import expect

from tests.e2e.conftest import PHONE
from tests.e2e.test_chat import composer, open_chat

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

CHANGED_FRACTION = 0.01  # more than 1 % of the pixels differ: a new picture


def keep(page, directory: Path, name: str) -> None:
    fresh = directory / f".{name}.new.png"
    page.screenshot(path=str(fresh), animations="disabled", caret="hide")
    target = directory / f"{name}.png"
    if target.exists() and not _differs(target, fresh):
        fresh.unlink()
        return
    fresh.replace(target)


def _differs(old: Path, new: Path) -> bool:
    with Image.open(old) as a, Image.open(new) as b:
        if a.size != b.size:
            return True
        diff = ImageChops.difference(a.convert("RGB"), b.convert("RGB")).convert("L")
        changed = sum(diff.point(lambda v: 255 if v > 16 else 0).histogram()[255:])
        return changed > CHANGED_FRACTION * a.size[0] * a.size[1]


def test_screenshots_of_the_main_pages(pages, site, screenshots_dir):
    anonymous = pages.page(pages.context())
    anonymous.goto("/accounts/login/")
    expect(anonymous.get_by_role("heading", name="Welcome back")).to_be_visible()
    keep(anonymous, screenshots_dir, "login")

    context = pages.context("sam")
    page = pages.page(context)
    open_chat(page, "/chat/ada/")
    composer(page).fill("What would you make of a machine that writes **poetry**?")
    composer(page).press("Enter")
    reply = page.locator(".messages > li.theirs").nth(1)
    expect(reply).to_have_attribute("data-status", "complete", timeout=20_000)
    expect(page.locator(".messages > li.mine .ticks")).to_have_attribute("aria-label", "Read")
    keep(page, screenshots_dir, "chat")

    page.goto("/")
    expect(page.locator(".character-card")).to_have_count(4)
    keep(page, screenshots_dir, "gallery")

    page.goto("/conversations/")
    expect(page.locator(".conversation-row")).to_have_count(2)
    expect(
        page.locator(".conversation-row", has_text="Weekend plans").locator(".unread")
    ).to_have_text("4")
    keep(page, screenshots_dir, "conversations")

    phone = pages.page(pages.context("sam", viewport=PHONE, is_mobile=True, has_touch=True))
    phone.goto("/")
    keep(phone, screenshots_dir, "gallery-phone")
    open_chat(phone, "/chat/ada/")
    expect(phone.locator(".messages > li.msg")).to_have_count(3)
    keep(phone, screenshots_dir, "chat-phone")
