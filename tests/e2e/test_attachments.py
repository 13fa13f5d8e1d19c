"""Attachments from the chat page: a picture picked from disk (preview, upload, the
image viewer), a file dropped on the page, and a voice message recorded in the page
(MediaRecorder on Chromium's fake microphone, with the live level meter), played back
with its waveform. Uploads go through `POST /api/attachments/` (issue 4)."""

from __future__ import annotations

import pytest
from PIL import Image
from playwright.sync_api import expect

from tests.e2e.test_chat import composer, open_chat

pytestmark = [pytest.mark.slow, pytest.mark.e2e]


def kinds(site, conversation: int) -> list[tuple]:
    return site.query(
        "SELECT kind, text FROM chat_message WHERE conversation_id = %s AND client_id IS NOT NULL "
        "AND kind <> 'text' ORDER BY seq",
        [conversation],
    )


def test_picture_file_and_voice_message(pages, site, tmp_path):
    conversation = site.seeded["night_shift"]
    page = pages.page(pages.context("bob", permissions=["microphone"]))
    open_chat(page, f"/chat/c/{conversation}/")

    # A picture, picked: preview in the tray, then sent with a caption.
    picture = tmp_path / "sunset.png"
    Image.new("RGB", (320, 200), (240, 120, 60)).save(picture)
    page.locator(".file-input").set_input_files(str(picture))
    tray = page.locator(".attachment-tray")
    expect(tray.locator(".tray-name")).to_have_text("sunset.png")
    assert tray.locator("img").get_attribute("src").startswith("blob:")
    composer(page).fill("Look at this sky")
    composer(page).press("Enter")
    sent = page.locator(".messages > li.mine").last
    image = sent.locator(".attachment-image img")
    expect(sent.locator(".ticks")).not_to_have_attribute("aria-label", "Sending", timeout=10_000)
    expect(image).to_be_visible()
    page.wait_for_function(
        "() => [...document.querySelectorAll('.messages li.mine .attachment-image img')]"
        ".some(img => img.complete && img.naturalWidth === 320)"
    )
    expect(tray).to_be_hidden()
    sent.get_by_role("button", name="Open the image").click()
    viewer = page.locator("dialog.viewer")
    expect(viewer).to_be_visible()
    page.keyboard.press("Escape")
    expect(viewer).to_be_hidden()

    # A file dropped on the page.
    page.evaluate(
        """() => {
          const data = new DataTransfer();
          data.items.add(new File(['minutes of the meeting'], 'minutes.txt', {type: 'text/plain'}));
          const root = document.querySelector('.chat');
          for (const type of ['dragenter', 'dragover', 'drop']) {
            const init = {dataTransfer: data, bubbles: true, cancelable: true};
            root.dispatchEvent(new DragEvent(type, init));
          }
        }"""
    )
    expect(tray.locator(".tray-name")).to_have_text("minutes.txt")
    page.get_by_role("button", name="Send").click()
    file_link = page.locator(".messages > li.mine .attachment-file").last
    expect(file_link).to_contain_text("minutes.txt")

    # A voice message: the meter moves while recording.
    page.get_by_role("button", name="Record a voice message").click()
    recorder = page.locator(".recorder")
    expect(recorder).to_be_visible()
    page.wait_for_function(
        "() => Number(document.querySelector('.meter').getAttribute('aria-valuenow')) > 0"
    )
    page.wait_for_timeout(1200)
    recorder.get_by_role("button", name="Done").click()
    expect(recorder).to_be_hidden()
    expect(tray.locator(".attachment-audio")).to_be_visible()
    page.get_by_role("button", name="Send").click()
    voice = page.locator(".messages > li.mine .attachment-audio").last
    expect(voice).to_be_visible()
    expect(voice.locator(".bar")).to_have_count(48)
    expect(page.locator(".messages > li.mine").last.locator(".ticks")).not_to_have_attribute(
        "aria-label", "Sending", timeout=10_000
    )
    voice.get_by_role("button", name="Play the voice message").click()
    expect(voice).to_have_class("attachment attachment-audio playing")

    assert kinds(site, conversation) == [
        ("image", "Look at this sky"),
        ("file", ""),
        ("audio", ""),
    ]
