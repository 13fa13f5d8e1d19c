"""Never lose what the user typed: a message sent offline waits in the outbox (kept in
localStorage, so a closed tab keeps it), goes out when the line is back, and arrives
exactly once, also when the connection drops between sending and the server's answer
(the retry carries the same client_id)."""

from __future__ import annotations

import json

import pytest
from playwright.sync_api import expect

from tests.e2e.test_chat import composer, open_chat

pytestmark = [pytest.mark.slow, pytest.mark.e2e]


def stored(site, conversation: int, text: str) -> list[tuple]:
    return site.query(
        "SELECT seq, client_id FROM chat_message WHERE conversation_id = %s AND text = %s",
        [conversation, text],
    )


def outbox(page) -> list[dict]:
    raw = page.evaluate(
        "() => Object.entries(localStorage).filter(([k]) => k.startsWith('parley:outbox:'))"
        ".map(([, v]) => v)"
    )
    return [entry for value in raw for entry in json.loads(value)]


def test_sent_offline_then_tab_closed_arrives_once_when_back(pages, site):
    pages.allow("ERR_INTERNET_DISCONNECTED")
    conversation = site.seeded["night_shift"]
    path = f"/chat/c/{conversation}/"
    bob = pages.page(pages.context("bob"))
    open_chat(bob, path)
    context = pages.context("alice")
    alice = pages.page(context)
    open_chat(alice, path)

    context.set_offline(True)
    banner = alice.locator(".banner")
    expect(banner).to_contain_text("You're offline")
    text = "Written on the night bus, no signal"
    composer(alice).fill(text)
    composer(alice).press("Enter")
    pending = alice.locator(".messages > li.mine")
    expect(pending).to_have_count(1)
    expect(pending.locator(".ticks")).to_have_attribute("aria-label", "Sending")
    expect(banner).to_contain_text("1 message waiting to be sent")
    [entry] = outbox(alice)
    assert (entry["text"], entry["conversation"]) == (text, conversation)
    alice.close()  # the tab is closed before the line comes back
    assert stored(site, conversation, text) == []

    context.set_offline(False)
    alice = pages.page(context)
    alice.goto(path)
    mine = alice.locator(".messages > li.mine")
    expect(mine).to_have_count(1)
    expect(mine.locator(".ticks")).not_to_have_attribute("aria-label", "Sending")
    rows = stored(site, conversation, text)
    assert [client_id for _, client_id in rows] == [entry["client_id"]]
    expect(bob.locator(".messages > li.theirs", has_text=text)).to_have_count(1)
    assert outbox(alice) == []


def test_a_connection_lost_before_the_answer_sends_once(pages, site):
    conversation = site.seeded["night_shift"]
    path = f"/chat/c/{conversation}/"
    bob = pages.page(pages.context("bob"))
    open_chat(bob, path)
    alice = pages.page(pages.context("alice"))
    open_chat(alice, path)
    text = "Did this go through twice?"
    composer(alice).fill(text)
    # Send, and drop the line at once: the frame is out, its message:status is lost.
    alice.evaluate(
        "() => { document.querySelector('.composer').requestSubmit();"
        " window.parley.connection.drop(); }"
    )
    expect(alice.locator(".banner")).to_be_visible()  # the connection banner says so
    alice.wait_for_function("() => window.parley.connection.state === 'open'", timeout=15_000)
    mine = alice.locator(".messages > li.mine", has_text=text)
    expect(mine).to_have_count(1)
    expect(mine.locator(".ticks")).not_to_have_attribute("aria-label", "Sending")
    assert len(stored(site, conversation, text)) == 1
    expect(bob.locator(".messages > li.theirs", has_text=text)).to_have_count(1)
    assert outbox(alice) == []
    expect(alice.locator(".banner")).to_be_hidden(timeout=5_000)


def test_offline_with_a_full_outbox_the_composer_waits_and_says_why(pages, site):
    pages.allow("ERR_INTERNET_DISCONNECTED")
    path = f"/chat/c/{site.seeded['night_shift']}/"
    context = pages.context("alice")
    alice = pages.page(context)
    open_chat(alice, path)
    context.set_offline(True)
    expect(alice.locator(".banner")).to_contain_text("You're offline")
    alice.evaluate(
        """(conversation) => {
          const box = window.parley.outbox;
          for (let i = 0; i < 49; i++) box.add({conversation, text: `queued ${i}`});
        }""",
        site.seeded["night_shift"],
    )
    composer(alice).fill("the fiftieth")
    composer(alice).press("Enter")
    reason = alice.locator(".composer-reason")
    expect(reason).to_contain_text("You're offline and 50 messages are already waiting")
    expect(composer(alice)).to_have_attribute("readonly", "")
    composer(alice).type("not lost")  # read-only: nothing typed goes anywhere
    expect(alice.get_by_role("button", name="Send")).to_be_disabled()
    # Leave nothing queued for the other tests.
    alice.evaluate("() => localStorage.clear()")
