"""The Character admin's persona preview (issue 3, point 1): one exchange through the
provider boundary, the offline responder clearly marked, staff editors only, nothing
stored; and the offline banner on the changelist."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from django.contrib.auth.models import Permission

from characters import services
from characters.llm import get_provider
from characters.llm.base import (
    ProviderError,
    ReplyDone,
    ReplyRequest,
    ReplyUsage,
    TextDelta,
    Turn,
)
from characters.llm.offline import compose_reply
from characters.models import Character
from chat.models import Generation, Message

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def offline(settings):
    settings.ANTHROPIC_API_KEY = ""
    settings.PARLEY_OFFLINE_WORDS_PER_S = 0  # no pacing: the test does not wait
    assert get_provider().offline


@pytest.fixture
def admin_client(client, make_user):
    client.force_login(make_user(is_staff=True, is_superuser=True))
    return client


def preview_url(character: Character) -> str:
    return f"/admin/characters/character/{character.pk}/preview/"


def change_url(character: Character) -> str:
    return f"/admin/characters/character/{character.pk}/change/"


def test_change_page_offers_the_preview(admin_client, character):
    response = admin_client.get(change_url(character))
    assert response.status_code == 200
    content = response.content.decode()
    assert 'id="persona-preview"' in content and "Try this persona" in content
    assert f'formaction="{preview_url(character)}"' in content
    assert 'name="preview_message"' in content
    assert "Offline responder" in content
    # The preview comes after the save buttons: Enter in a field still saves.
    assert content.index('name="_save"') < content.index('id="persona-preview"')


def test_preview_page_renders_with_the_saved_persona(admin_client, character):
    response = admin_client.get(preview_url(character))
    assert response.status_code == 200
    assert response.context["form"].initial["persona"] == "You test things."
    assert b'id="offline-responder"' in response.content
    assert response.context["result"] is None


def test_preview_runs_one_exchange_with_the_offline_responder(admin_client, character):
    response = admin_client.post(
        preview_url(character),
        {"persona": "You are a lighthouse keeper.", "preview_message": "Any ships tonight?"},
    )
    assert response.status_code == 200, response.content[:1000]
    result = response.context["result"]
    assert result.offline and result.provider == "offline" and result.model == "offline"
    assert result.error_code == "" and result.stop_reason == "end_turn"
    # The reply is the offline responder's, in the tried (unsaved) persona's voice.
    assert "I am a lighthouse keeper." in result.reply
    assert result.persona.startswith("You are a lighthouse keeper.")
    assert "Hello, tester here." in result.persona  # the greeting opened the conversation
    user = response.wsgi_request.user
    expected = ReplyRequest(
        system=result.persona,
        turns=[Turn(role="user", text="Any ships tonight?")],
        model="offline",
        character_name="Tester",
        greeting="Hello, tester here.",
        user_name=user.display_name or user.username,
    )
    assert result.reply == compose_reply(expected)
    assert result.usage.input_tokens > 0 and result.usage.output_tokens > 0
    assert result.time_to_first_token_ms is not None and result.total_ms >= 0
    content = response.content.decode()
    assert 'id="preview-reply"' in content and "Reply (offline responder)" in content
    assert "Input tokens" in content and "Output tokens" in content
    # A preview stores nothing, and does not save the tried persona.
    character.refresh_from_db()
    assert character.persona == "You test things."
    assert not Message.objects.exists() and not Generation.objects.exists()


def test_preview_from_the_change_form_uses_its_unsaved_persona(admin_client, character):
    """The change form's own fields are posted to the preview (formaction)."""
    response = admin_client.post(
        preview_url(character),
        {
            "name": "Tester",
            "slug": "tester",
            "persona": "You are a grumpy cat.",
            "greeting": "",
            "preview_message": "Hello?",
            "temperature": "1.0",
        },
    )
    assert response.status_code == 200
    result = response.context["result"]
    assert (
        result.persona.startswith("You are a grumpy cat.") and "I am a grumpy cat." in result.reply
    )


def test_preview_needs_a_message(admin_client, character):
    response = admin_client.post(preview_url(character), {"persona": "p", "preview_message": " "})
    assert response.status_code == 200
    assert response.context["result"] is None
    assert "preview_message" in response.context["form"].errors


def test_provider_failures_are_shown_with_the_partial_reply(admin_client, character, monkeypatch):
    class Failing:
        name = "anthropic"
        offline = False

        async def stream(self, request) -> AsyncIterator[TextDelta | ReplyDone]:
            yield TextDelta("Half a ")
            raise ProviderError("overloaded", "Overloaded (HTTP 529)")

    monkeypatch.setattr(services, "get_provider", lambda: Failing())
    response = admin_client.post(preview_url(character), {"persona": "p", "preview_message": "hi"})
    assert response.status_code == 200
    result = response.context["result"]
    assert (result.reply, result.error_code, result.offline) == ("Half a ", "overloaded", False)
    assert b"The provider failed: overloaded" in response.content
    assert b"Reply (offline responder)" not in response.content


def test_usage_from_a_real_provider_is_shown(admin_client, character, monkeypatch):
    class Fake:
        name = "anthropic"
        offline = False

        async def stream(self, request) -> AsyncIterator[TextDelta | ReplyDone]:
            yield TextDelta("Hi.")
            yield ReplyDone(
                stop_reason="end_turn",
                model="claude-test",
                usage=ReplyUsage(input_tokens=11, output_tokens=2, cache_read_tokens=7),
            )

    monkeypatch.setattr(services, "get_provider", lambda: Fake())
    response = admin_client.post(preview_url(character), {"persona": "p", "preview_message": "hi"})
    content = response.content.decode()
    assert "claude-test" in content and "<td>11</td>" in content and "<td>2</td>" in content
    assert "7 / 0" in content


def test_preview_is_for_staff_editors_only(client, make_user, character):
    response = client.get(preview_url(character))
    assert response.status_code == 302 and "/admin/login/" in response["Location"]
    client.force_login(make_user())
    response = client.post(preview_url(character), {"persona": "p", "preview_message": "hi"})
    assert response.status_code == 302 and "/admin/login/" in response["Location"]
    viewer = make_user(is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_character"))
    client.force_login(viewer)
    assert client.get(change_url(character)).status_code == 200
    assert b'id="persona-preview"' not in client.get(change_url(character)).content
    response = client.post(preview_url(character), {"persona": "p", "preview_message": "hi"})
    assert response.status_code == 403
    assert not Message.objects.exists()


def test_missing_character_redirects(admin_client):
    response = admin_client.get("/admin/characters/character/999999/preview/")
    assert response.status_code == 302


def test_changelist_banner_follows_the_key(admin_client, character, settings):
    response = admin_client.get("/admin/characters/character/")
    assert b'id="offline-responder"' in response.content
    settings.ANTHROPIC_API_KEY = "sk-test-not-used"
    response = admin_client.get("/admin/characters/character/")
    assert b'id="offline-responder"' not in response.content
    assert b'id="provider-status"' in response.content
