"""Feedback on character replies (issue 3, point 8): `POST /api/messages/{id}/feedback/`
sets or changes one +1/-1 per user and reply, for members only, on replies only; the
admin lists it with totals per character, and reply accounting with totals per
character and per user (point 7)."""

from __future__ import annotations

import pytest
from django.db import IntegrityError

from characters.models import Character
from chat.models import Conversation, Feedback, Generation, Membership, Message

pytestmark = pytest.mark.django_db


def feedback_url(message_id: int) -> str:
    return f"/api/messages/{message_id}/feedback/"


def assert_error(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.content
    body = response.json()
    assert body["code"] == code and isinstance(body["message"], str) and body["message"], body
    return body


def conversation_with(user, character: Character) -> tuple[Conversation, Message, Message]:
    """A character conversation holding the greeting (a reply) and a user message, made
    directly so that no character reply is started."""
    conversation = Conversation.objects.create(
        kind=Conversation.Kind.CHARACTER, character=character, created_by=user, last_seq=2
    )
    Membership.objects.create(user=user, conversation=conversation, role="owner")
    reply = Message.objects.create(
        conversation=conversation,
        seq=1,
        role=Message.Role.ASSISTANT,
        sender_character=character,
        text=character.greeting,
    )
    mine = Message.objects.create(
        conversation=conversation,
        seq=2,
        role=Message.Role.USER,
        sender_user=user,
        client_id="c-1",
        text="hi",
    )
    return conversation, reply, mine


@pytest.fixture
def member(make_user):
    return make_user()


@pytest.fixture
def chat(member, character):
    return conversation_with(member, character)


def test_plus_one_then_change_to_minus_one(api_client_for, member, chat):
    _, reply, _ = chat
    client = api_client_for(member)
    response = client.post(feedback_url(reply.pk), {"value": 1}, format="json")
    assert response.status_code == 200, response.content
    assert response.json() == {"message": reply.pk, "value": 1}
    response = client.post(feedback_url(reply.pk), {"value": -1}, format="json")
    assert response.status_code == 200, response.content
    assert response.json() == {"message": reply.pk, "value": -1}
    feedback = Feedback.objects.get()
    assert (feedback.message_id, feedback.user_id, feedback.value) == (reply.pk, member.pk, -1)
    assert feedback.updated_at >= feedback.created_at


def test_each_member_has_their_own_feedback(api_client_for, make_user, member, chat):
    conversation, reply, _ = chat
    other = make_user()
    Membership.objects.create(user=other, conversation=conversation)
    api_client_for(member).post(feedback_url(reply.pk), {"value": 1}, format="json")
    api_client_for(other).post(feedback_url(reply.pk), {"value": -1}, format="json")
    assert sorted(Feedback.objects.values_list("value", flat=True)) == [-1, 1]


@pytest.mark.parametrize(
    "body", [{"value": 0}, {"value": 2}, {"value": -2}, {"value": True}, {"value": None}, {}]
)
def test_invalid_values_are_bad_requests(api_client_for, member, chat, body):
    _, reply, _ = chat
    response = api_client_for(member).post(feedback_url(reply.pk), body, format="json")
    assert_error(response, 400, "bad_request")
    assert not Feedback.objects.exists()


def test_non_members_get_not_found(api_client_for, make_user, chat):
    _, reply, _ = chat
    client = api_client_for(make_user())
    assert_error(client.post(feedback_url(reply.pk), {"value": 1}, format="json"), 404, "not_found")
    assert_error(client.post(feedback_url(999_999), {"value": 1}, format="json"), 404, "not_found")
    assert not Feedback.objects.exists()


def test_only_character_replies_take_feedback(api_client_for, member, chat):
    _, _, mine = chat
    response = api_client_for(member).post(feedback_url(mine.pk), {"value": 1}, format="json")
    assert_error(response, 400, "bad_request")
    assert not Feedback.objects.exists()


def test_deleted_replies_are_gone(api_client_for, member, chat):
    _, reply, _ = chat
    Message.objects.filter(pk=reply.pk).update(deleted_at="2026-01-01T00:00:00Z")
    response = api_client_for(member).post(feedback_url(reply.pk), {"value": 1}, format="json")
    assert_error(response, 404, "not_found")


def test_anonymous_gets_401(api_client_for, chat):
    _, reply, _ = chat
    response = api_client_for().post(feedback_url(reply.pk), {"value": 1}, format="json")
    assert_error(response, 401, "not_authenticated")
    assert response["WWW-Authenticate"].startswith("Bearer")


def test_the_database_allows_only_plus_or_minus_one(member, chat):
    _, reply, _ = chat
    with pytest.raises(IntegrityError):
        Feedback.objects.create(message=reply, user=member, value=5)


# --- Admin


@pytest.fixture
def admin_client(client, make_user):
    client.force_login(make_user(is_staff=True, is_superuser=True))
    return client


def test_feedback_changelist_shows_totals_per_character(admin_client, make_user, character):
    other_character = Character.objects.create(slug="bard", name="Bard", persona="p")
    votes = [(character, 1), (character, 1), (character, -1), (other_character, -1)]
    for who, value in votes:
        user = make_user()
        _, reply, _ = conversation_with(user, who)
        Feedback.objects.create(message=reply, user=user, value=value)
    response = admin_client.get("/admin/chat/feedback/")
    assert response.status_code == 200
    totals = {
        row["message__sender_character__name"]: row for row in response.context["feedback_totals"]
    }
    assert (totals["Tester"]["up"], totals["Tester"]["down"], totals["Tester"]["total"]) == (
        2,
        1,
        3,
    )
    assert (totals["Bard"]["up"], totals["Bard"]["down"]) == (0, 1)
    assert b'id="feedback-totals"' in response.content
    # Filtered by character, the totals follow the filter.
    filtered = admin_client.get(
        f"/admin/chat/feedback/?message__sender_character__id__exact={other_character.pk}"
    )
    assert filtered.status_code == 200
    assert [r["message__sender_character__name"] for r in filtered.context["feedback_totals"]] == [
        "Bard"
    ]
    # Feedback is the users' word: no add button, read-only detail pages.
    assert admin_client.get("/admin/chat/feedback/add/").status_code == 403
    detail = admin_client.get(f"/admin/chat/feedback/{Feedback.objects.first().pk}/change/")
    assert detail.status_code == 200 and b'name="value"' not in detail.content


def test_generation_changelist_shows_totals_per_character_and_user(
    admin_client, make_user, character
):
    alice, bob = make_user("alice"), make_user("bob")
    chats = {user: conversation_with(user, character) for user in (alice, bob)}
    for seq, (user, tokens) in enumerate(((alice, 100), (alice, 50), (bob, 10)), start=3):
        conversation = chats[user][0]
        reply = Message.objects.create(
            conversation=conversation, seq=seq, role="assistant", sender_character=character
        )
        Generation.objects.create(
            message=reply,
            conversation=conversation,
            character=character,
            user=user,
            provider="offline",
            model="offline",
            status="complete",
            input_tokens=tokens,
            output_tokens=tokens * 2,
            time_to_first_token_ms=20,
            total_ms=300,
        )
    response = admin_client.get("/admin/chat/generation/")
    assert response.status_code == 200
    totals = response.context["usage_totals"]
    [per_character] = totals["per_character"]
    assert per_character["character__name"] == "Tester"
    assert (per_character["replies"], per_character["input_tokens"]) == (3, 160)
    assert per_character["output_tokens"] == 320
    per_user = {row["user__username"]: row for row in totals["per_user"]}
    assert (per_user["alice"]["replies"], per_user["alice"]["output_tokens"]) == (2, 300)
    assert (per_user["bob"]["replies"], per_user["bob"]["output_tokens"]) == (1, 20)
    assert b'id="usage-per-user"' in response.content
    assert admin_client.get("/admin/chat/generation/add/").status_code == 403
