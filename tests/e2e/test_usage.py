"""Usage bars move with every message; at 80 % the bar warns, at the limit the
composer says why it is off and offers the upgrade (issue 5's quotas: Quill allows 5
text messages a day on the free plan, tests/e2e/seed.py)."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from tests.e2e.seed import QUOTA_CHARACTER, QUOTA_TEXT_LIMIT
from tests.e2e.test_chat import composer, open_chat

pytestmark = [pytest.mark.slow, pytest.mark.e2e]


def test_usage_bar_warning_and_upgrade_prompt_at_the_limit(pages, site):
    page = pages.page(pages.context("dave"))
    open_chat(page, f"/chat/{QUOTA_CHARACTER}/")
    text_bar = page.locator(".usage-item.usage-text")
    expect(text_bar.locator(".usage-count")).to_have_text(f"0/{QUOTA_TEXT_LIMIT}")
    meter = text_bar.get_by_role("meter")
    expect(meter).to_have_attribute("aria-valuenow", "0")
    prompt = page.locator(".quota-prompt")
    expect(prompt).to_be_hidden()

    for n in range(1, QUOTA_TEXT_LIMIT + 1):
        composer(page).fill(f"Verse number {n}")
        composer(page).press("Enter")
        expect(text_bar.locator(".usage-count")).to_have_text(f"{n}/{QUOTA_TEXT_LIMIT}")
        expect(meter).to_have_attribute("aria-valuenow", str(n))
        level = (
            "ok"
            if n < 0.8 * QUOTA_TEXT_LIMIT
            else "warning"
            if n < QUOTA_TEXT_LIMIT
            else "exhausted"
        )
        expect(text_bar).to_have_class(f"usage-item usage-text level-{level}")

    # At the limit: the upgrade prompt, and the input off with the reason.
    expect(prompt).to_be_visible()
    expect(prompt).to_contain_text(f"You have used all {QUOTA_TEXT_LIMIT} text messages today.")
    expect(prompt).to_contain_text("Resets on")
    expect(prompt.get_by_role("link", name="Upgrade")).to_have_attribute("href", "/upgrade/")
    # The prompt is the input's reason (aria-describedby), not repeated under it.
    expect(composer(page)).to_have_attribute("aria-describedby", re.compile(r"\bquota-text\b"))
    expect(page.locator(".composer-reason")).to_be_hidden()
    expect(composer(page)).to_have_attribute("readonly", "")
    expect(page.get_by_role("button", name="Send")).to_be_disabled()

    # Still so after a reload (the state comes from the server, not the page).
    page.reload()
    expect(page.locator(".quota-prompt")).to_be_visible()
    expect(page.locator(".usage-item.usage-text")).to_have_class(
        "usage-item usage-text level-exhausted"
    )
    page.locator(".quota-prompt").get_by_role("link", name="Upgrade").click()
    page.wait_for_url("**/upgrade/")
