"""Two people in a group, each in their own browser context (two devices): they see
each other's messages, typing, read ticks and presence, live.

The typing, receipt and presence parts rely on the live signals of issue 6
(`typing:indicator`, `receipt:update`, `presence:update`).
"""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from tests.e2e.test_chat import composer, open_chat

pytestmark = [pytest.mark.slow, pytest.mark.e2e]


def test_two_people_see_messages_typing_read_ticks_and_presence(pages, site):
    alice = pages.page(pages.context("alice"))
    alice.goto("/conversations/")
    alice.get_by_text("New group").click()
    alice.get_by_label("Title").fill("Team")
    alice.get_by_label("Members").fill("bob")
    alice.get_by_role("button", name="Create group").click()
    alice.wait_for_url(re.compile(r"/chat/c/\d+/$"))
    path = alice.url.removeprefix(site.url)
    alice.wait_for_function("() => window.parley.connection.state === 'open'")
    expect(alice.locator("h1")).to_contain_text("Team")

    bob = pages.page(pages.context("bob"))
    open_chat(bob, path)
    # Presence (issue 6): Alice's page shows Bob online once his socket is up.
    expect(
        alice.locator(f'.members [data-presence-for="{site.seeded["users"]["bob"]}"]')
    ).to_have_class("presence presence-online", timeout=10_000)

    # Typing (issue 6): Bob sees "Alice is typing…" with the animated dots.
    composer(alice).click()
    composer(alice).type("Hello Bob")
    typing = bob.locator(".typing")
    expect(typing).to_be_visible()
    expect(typing).to_contain_text("Alice is typing…")
    composer(alice).press("Enter")
    expect(typing).to_be_hidden(timeout=10_000)  # typing:stop on send

    received = bob.locator(".messages > li.theirs")
    expect(received).to_have_count(1)
    expect(received.first).to_contain_text("Hello Bob")
    expect(received.first.locator(".who")).to_have_text("Alice")
    # Announced to screen readers (an aria-live region).
    expect(bob.locator(".announcer")).to_have_text("Alice: Hello Bob")

    # Read ticks (issue 6): Bob's page is open at the bottom, so it reads; Alice's
    # tick goes from sent to delivered to read.
    tick = alice.locator(".messages > li.mine .ticks")
    expect(tick).to_have_attribute("aria-label", "Read", timeout=10_000)

    composer(bob).fill("Hi Alice! 👋")
    composer(bob).press("Enter")
    answer = alice.locator(".messages > li.theirs")
    expect(answer).to_have_count(1)
    expect(answer.first).to_contain_text("Hi Alice! 👋")
    expect(bob.locator(".messages > li.mine .ticks")).to_have_attribute(
        "aria-label", "Read", timeout=10_000
    )

    # The conversation list: the group with its last message; Bob's socket is gone once
    # his page closes, and his dot goes grey after the grace period.
    bob.close()
    alice.goto("/conversations/")
    row = alice.locator(".conversation-row", has_text="Team")
    expect(row.locator(".row-preview")).to_have_text("Bob: Hi Alice! 👋")
    expect(row.locator(".unread")).to_have_count(0)  # Alice read it
    expect(row.locator(".presence")).to_have_class("presence presence-offline", timeout=15_000)
