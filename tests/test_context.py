"""characters.context: what a character is sent (no database: unsaved model instances)."""

from __future__ import annotations

import itertools

import pytest

from accounts.models import User
from characters.context import GROUP_NOTE, build_reply_request
from characters.llm.base import Turn
from characters.llm.tokens import MESSAGE_OVERHEAD_TOKENS, estimate_tokens
from characters.models import Character
from chat.models import Message

ALICE = User(pk=1, username="alice", display_name="Alice")
BOB = User(pk=2, username="bob")  # no display name: the username stands in


def make_character(pk: int = 10, name: str = "Mira", **fields) -> Character:
    values = {
        "slug": name.lower(),
        "persona": f"You are {name}, a sky pirate.",
        "greeting": "Ahoy!",
        "context_budget": 8000,
        "max_output_tokens": 512,
        "temperature": 0.8,
    }
    values.update(fields)
    return Character(pk=pk, name=name, **values)


MIRA = make_character()
ORIN = make_character(pk=11, name="Orin")


class History:
    """Builds messages with increasing seq, as the chat side would load them."""

    def __init__(self) -> None:
        self.messages: list[Message] = []

    def add(self, sender, text: str, **fields) -> Message:
        seq = len(self.messages) + 1
        if isinstance(sender, Character):
            fields.setdefault("role", "assistant")
            message = Message(seq=seq, sender_character=sender, text=text, **fields)
        elif isinstance(sender, User):
            message = Message(seq=seq, sender_user=sender, role="user", text=text, **fields)
        else:
            message = Message(seq=seq, role="system", kind="system", text=text, **fields)
        self.messages.append(message)
        return message


def build(messages, character=MIRA, **options):
    return build_reply_request(character=character, messages=messages, **options)


def test_persona_greeting_and_one_user_message():
    h = History()
    h.add(MIRA, "Ahoy! Welcome aboard.")
    h.add(ALICE, "Where are we going?")
    request, info = build(h.messages)
    # The greeting opened the conversation: kept, as part of the system prompt, since
    # the API wants the first turn from the user.
    assert request.system.startswith("You are Mira, a sky pirate.")
    assert "Ahoy! Welcome aboard." in request.system
    assert request.turns == [Turn("user", "Where are we going?")]
    assert (info.messages_used, info.messages_total, info.trimmed) == (2, 2, False)
    assert request.model  # the default model setting
    assert request.max_tokens == 512
    assert request.temperature == 0.8
    assert (request.character_name, request.greeting, request.user_name) == (
        "Mira",
        "Ahoy!",
        "Alice",
    )


def test_model_of_the_character_or_the_default(settings):
    settings.ANTHROPIC_DEFAULT_MODEL = "claude-default"
    h = History()
    h.add(ALICE, "Hi")
    assert build(h.messages)[0].model == "claude-default"
    assert build(h.messages, character=make_character(model="claude-special"))[0].model == (
        "claude-special"
    )
    assert build(h.messages, model="claude-override")[0].model == "claude-override"


def test_turns_alternate_with_consecutive_messages_merged():
    h = History()
    h.add(ALICE, "One.")
    h.add(ALICE, "Two.")
    h.add(MIRA, "Three.")
    h.add(MIRA, "Four.")
    h.add(ALICE, "Five.")
    request, info = build(h.messages)
    assert request.turns == [
        Turn("user", "One.\n\nTwo."),
        Turn("assistant", "Three.\n\nFour."),
        Turn("user", "Five."),
    ]
    assert info.messages_used == info.messages_total == 5


def test_system_empty_failed_streaming_and_deleted_messages_are_left_out():
    from django.utils import timezone

    h = History()
    h.add(ALICE, "Hello.")
    h.add(None, "Alice joined.")
    h.add(MIRA, "Half a rep", status="failed")
    h.add(MIRA, "", status="complete")
    h.add(ALICE, "   ")
    h.add(ALICE, "gone", deleted_at=timezone.now())
    h.add(ALICE, "Still there?")
    h.add(MIRA, "", status="streaming")  # the reply being written
    request, info = build(h.messages)
    assert request.turns == [Turn("user", "Hello.\n\nStill there?")]
    assert (info.messages_used, info.messages_total, info.trimmed) == (2, 2, False)


def test_a_stopped_reply_keeps_its_partial_text():
    h = History()
    h.add(ALICE, "Tell me a story.")
    h.add(MIRA, "Once upon a", status="stopped")
    h.add(ALICE, "Shorter, please.")
    request, _ = build(h.messages)
    assert [t.role for t in request.turns] == ["user", "assistant", "user"]
    assert request.turns[1].text == "Once upon a"


def test_attachments_are_mentioned():
    h = History()
    h.add(ALICE, "", kind="image")
    h.add(ALICE, "my cat", kind="image")
    request, _ = build(h.messages)
    assert request.turns == [Turn("user", "[image]\n\n[image] my cat")]


def test_the_request_ends_with_a_user_turn():
    h = History()
    h.add(ALICE, "Hi")
    h.add(MIRA, "Hello!")
    request, info = build(h.messages)
    assert request.turns == [Turn("user", "Hi")]
    assert (info.messages_used, info.messages_total) == (1, 2)


def test_nothing_to_answer_is_an_error():
    h = History()
    h.add(MIRA, "Ahoy!")
    with pytest.raises(ValueError):
        build(h.messages)
    with pytest.raises(ValueError):
        build([])


def _cost(text: str) -> int:
    return estimate_tokens(text) + MESSAGE_OVERHEAD_TOKENS


def test_budget_keeps_the_newest_messages():
    h = History()
    for i in range(41):
        h.add(ALICE if i % 2 == 0 else MIRA, f"message {i:02d} " + "x" * 88)
    budget = 300
    request, info = build(h.messages, character=make_character(context_budget=budget))
    fits = budget // _cost(h.messages[0].text)
    assert fits == 10  # messages 31 to 40
    assert info.trimmed
    assert info.messages_total == 41
    # The oldest that fit, 31, is Mira's: dropped, since the first turn must be the
    # user's (and not kept in the system prompt: it did not open the conversation).
    assert info.messages_used == fits - 1
    texts = "\n\n".join(t.text for t in request.turns)
    assert "message 40" in texts and "message 32" in texts
    assert "message 31" not in texts and "message 31" not in request.system
    assert request.turns[0].role == "user" and request.turns[-1].role == "user"
    roles = [t.role for t in request.turns]
    assert len(roles) == 9
    assert all(a != b for a, b in itertools.pairwise(roles))


def test_the_newest_message_is_kept_even_over_budget():
    h = History()
    h.add(ALICE, "old")
    h.add(ALICE, "y" * 4000)
    request, info = build(h.messages, character=make_character(context_budget=256))
    assert request.turns == [Turn("user", "y" * 4000)]
    assert (info.messages_used, info.messages_total, info.trimmed) == (1, 2, True)


def test_estimated_tokens_cover_the_whole_request():
    h = History()
    h.add(ALICE, "a" * 400)
    h.add(MIRA, "b" * 200)
    h.add(ALICE, "c" * 40)
    request, info = build(h.messages)
    expected = _cost(request.system) + sum(_cost(t.text) for t in request.turns)
    assert info.estimated_tokens == expected
    assert info.as_dict() == {
        "messages_used": 3,
        "messages_total": 3,
        "trimmed": False,
        "estimated_tokens": expected,
    }


def test_group_turns_are_labeled_with_their_speaker():
    h = History()
    h.add(ALICE, "Hi all")
    h.add(ORIN, "Greetings.")
    h.add(BOB, "@mira what do you think?")
    h.add(MIRA, "I think we sail.")
    h.add(ALICE, "@mira and then?")
    request, info = build(h.messages)
    assert request.turns == [
        Turn("user", "Alice: Hi all\n\nOrin: Greetings.\n\nbob: @mira what do you think?"),
        Turn("assistant", "I think we sail."),
        Turn("user", "Alice: @mira and then?"),
    ]
    assert GROUP_NOTE.format(name="Mira") in request.system
    assert request.user_name == "Alice"
    assert info.messages_used == 5


def test_group_can_be_forced_either_way():
    h = History()
    h.add(ALICE, "Hi")
    request, _ = build(h.messages, group=True)
    assert request.turns == [Turn("user", "Alice: Hi")]
    assert "group conversation" in request.system

    h.add(ORIN, "Hello, Alice.")
    h.add(ALICE, "Hi Orin")
    request, _ = build(h.messages, group=False)
    # Another character is never passed off as the user, group or not.
    assert request.turns == [Turn("user", "Hi\n\nOrin: Hello, Alice.\n\nHi Orin")]
    assert "group conversation" not in request.system


def test_one_person_and_one_character_is_not_labeled():
    h = History()
    h.add(ALICE, "Hi")
    h.add(MIRA, "Ahoy")
    h.add(ALICE, "Bye")
    request, _ = build(h.messages)
    assert request.turns[0] == Turn("user", "Hi")
    assert "group conversation" not in request.system
