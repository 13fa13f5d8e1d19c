"""The chat page with a character: a reply streaming in, history after a reload,
infinite scroll back through a long conversation, and the composer."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

# Records, in the page, the length of the streaming reply's text at every change.
WATCH_STREAM = """() => {
  window.__grow = [];
  const list = document.querySelector('.messages');
  new MutationObserver(() => {
    const body = list.querySelector('li[data-status=streaming] .body');
    if (body) window.__grow.push(body.textContent.length);
  }).observe(list, {subtree: true, childList: true, characterData: true, attributes: true});
}"""


def open_chat(page, path: str) -> None:
    page.goto(path)
    page.wait_for_function("() => window.parley && window.parley.connection.state === 'open'")


def composer(page):
    return page.get_by_role("textbox", name="Message", exact=True)


def test_a_reply_streams_in_then_history_survives_a_reload(pages, site):
    page = pages.page(pages.context("alice"))
    open_chat(page, "/chat/ada/")
    messages = page.locator(".messages > li.msg")
    expect(messages).to_have_count(1)
    expect(messages.first).to_contain_text("Good day!")  # the character's greeting

    page.evaluate(WATCH_STREAM)
    composer(page).fill("Tell me about the **Analytical Engine**?")
    expect(page.locator(".counter")).to_have_text("40 / 4000")
    composer(page).press("Enter")

    mine = page.locator(".messages > li.mine")
    expect(mine).to_have_count(1)
    # Markdown, as the server rendered and sanitized it.
    expect(mine.locator("strong")).to_have_text("Analytical Engine")
    expect(composer(page)).to_have_value("")
    stop = page.get_by_role("button", name="Stop the reply")
    expect(stop).to_be_visible()  # while the reply streams
    reply = page.locator(".messages > li.theirs").nth(1)
    expect(reply).to_have_attribute("data-status", "complete", timeout=20_000)
    expect(stop).to_be_hidden()
    expect(reply.locator(".tag-offline")).to_have_text("offline responder")

    rows = site.query(
        "SELECT m.seq, m.status, m.text FROM chat_message m JOIN chat_conversation c "
        "ON c.id = m.conversation_id JOIN characters_character ch ON ch.id = c.character_id "
        "JOIN accounts_user u ON u.id = c.created_by_id "
        "WHERE ch.slug = 'ada' AND u.username = 'alice' ORDER BY m.seq"
    )
    assert [row[:2] for row in rows] == [(1, "complete"), (2, "complete"), (3, "complete")]
    final = rows[2][2]
    grow = page.evaluate("window.__grow")
    assert len(set(grow)) >= 3, f"the reply did not grow in steps: {grow}"
    assert grow == sorted(grow), grow
    assert 0 < max(grow) <= len(final), (grow, final)
    # The character read the message it answered.
    expect(mine.locator(".ticks")).to_have_attribute("aria-label", "Read")

    texts = messages.locator(".body").all_inner_texts()
    page.reload()
    expect(messages).to_have_count(3)
    assert messages.locator(".body").all_inner_texts() == texts
    expect(mine.locator(".ticks")).to_have_attribute("aria-label", "Read")


def test_stop_keeps_the_partial_reply(pages, site):
    page = pages.page(pages.context("bob"))
    open_chat(page, "/chat/captain-brine/")
    composer(page).fill("Tell me a long tale of storms, sea serpents and the wide sea")
    composer(page).press("Enter")
    reply = page.locator(".messages > li.theirs").nth(1)
    expect(reply).to_have_attribute("data-status", "streaming")
    page.wait_for_function(
        "() => document.querySelector('.messages > li.theirs:nth-child(3) .body')"
        ".textContent.length > 0"
    )
    page.get_by_role("button", name="Stop the reply").click()
    expect(reply).to_have_attribute("data-status", "stopped", timeout=10_000)
    expect(reply.locator(".note")).to_contain_text("Stopped.")
    assert reply.locator(".body").inner_text().strip() != ""


def test_composer_keys_emoji_and_counter(pages, site):
    page = pages.page(pages.context("carol"))
    open_chat(page, "/chat/sage/")
    box = composer(page)
    box.click()
    box.type("first line")
    box.press("Shift+Enter")  # a line break, not a send
    box.type("second line ")
    page.get_by_role("button", name="Insert an emoji").click()
    expect(page.get_by_role("dialog", name="Emoji")).to_be_visible()
    page.get_by_role("button", name="🎉").click()
    expect(page.get_by_role("dialog", name="Emoji")).to_be_hidden()
    expect(box).to_have_value("first line\nsecond line 🎉")
    expect(page.locator(".counter")).to_have_text("24 / 4000")  # code points, like the server

    # Over the limit: the send button is off and the counter says so.
    page.evaluate(
        """() => {
          const box = document.querySelector('#composer-text');
          box.removeAttribute('maxlength');
          box.value = 'x'.repeat(4001);
          box.dispatchEvent(new Event('input'));
        }"""
    )
    expect(page.locator(".counter")).to_have_class("counter near over")
    expect(page.get_by_role("button", name="Send")).to_be_disabled()
    page.evaluate(
        """() => {
          const box = document.querySelector('#composer-text');
          box.value = 'first line\\nsecond line 🎉';
          box.dispatchEvent(new Event('input'));
        }"""
    )
    box.press("Enter")
    mine = page.locator(".messages > li.mine")
    expect(mine).to_have_count(1)
    expect(box).to_have_value("")
    expect(mine.locator(".ticks")).not_to_have_attribute("aria-label", "Sending")
    rows = site.query(
        "SELECT text FROM chat_message m JOIN accounts_user u ON u.id = m.sender_user_id "
        "WHERE u.username = 'carol' AND m.client_id IS NOT NULL AND m.text LIKE 'first line%%'"
    )
    assert rows == [("first line\nsecond line 🎉",)]


def test_infinite_scroll_back_to_the_beginning(pages, site):
    page = pages.page(pages.context("carol"))
    history = site.seeded["history"]
    open_chat(page, f"/chat/c/{history}/")
    messages = page.locator(".messages > li.msg")
    expect(messages).to_have_count(50)  # the latest page
    expect(messages.last).to_contain_text("History message number 130")
    scroller = page.locator(".scroller")
    for expected in (100, 130):
        scroller.evaluate("el => { el.scrollTop = 0; }")
        expect(messages).to_have_count(expected)
    expect(page.locator(".history-start")).to_be_visible()
    seqs = [int(s) for s in messages.evaluate_all("els => els.map(e => e.dataset.seq)")]
    assert seqs == list(range(1, 131))  # in order, none twice, none missing
    expect(messages.first).to_contain_text("History message number 1")


def test_a_refused_message_shows_failed_with_retry_and_delete(pages, site):
    page = pages.page(pages.context("dave"))
    open_chat(page, "/chat/sage/")
    # A NUL character is refused by the server (bad_request): the message fails.
    page.evaluate(
        """() => {
          const box = document.querySelector('#composer-text');
          box.value = 'nul \\u0000 inside';
          box.dispatchEvent(new Event('input'));
        }"""
    )
    composer(page).press("Enter")
    failed = page.locator(".messages > li.mine")
    expect(failed.locator(".ticks")).to_have_attribute("aria-label", "Not sent")
    expect(failed.locator(".note")).to_contain_text("NUL")
    failed.get_by_role("button", name="Retry").click()  # the same client_id again
    expect(failed.locator(".ticks")).to_have_attribute("aria-label", "Not sent")
    expect(failed).to_have_count(1)
    page.reload()  # still there, still failed (not re-sent on its own): the outbox keeps it
    expect(failed.locator(".ticks")).to_have_attribute("aria-label", "Not sent")
    expect(failed.get_by_role("button", name="Retry")).to_be_visible()
    failed.get_by_role("button", name="Delete").click()
    expect(failed).to_have_count(0)
    assert page.evaluate("() => window.parley.outbox.size") == 0


def test_a_deactivated_account_is_told_and_cannot_send(pages, site):
    from tests.servers import django_command

    page = pages.page(pages.context("eve"))
    open_chat(page, "/chat/ada/")
    composer(page).fill("typed before the ban")
    django_command(site.env, "deactivate", "eve")
    expect(page.locator(".banner")).to_contain_text("can no longer send or receive")
    expect(page.locator(".composer-reason")).to_have_text("This account cannot send messages.")
    expect(composer(page)).to_have_value("typed before the ban")  # nothing typed is lost
    expect(page.get_by_role("button", name="Send")).to_be_disabled()
    page.wait_for_timeout(1500)
    assert page.evaluate("() => window.parley.connection.state") == "banned"  # no retry loop
