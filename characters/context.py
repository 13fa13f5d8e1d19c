"""What a character is sent: its persona, then the newest messages that fit its budget.

Pure functions over already loaded messages (no queries): the caller passes what the
character witnessed, ascending by seq: `chat.models.Message` instances with
`sender_user` / `sender_character` loaded, or lighter records with the same attributes
(`chat.replies.WindowMessage`, what a reply's start reads).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Protocol

from django.conf import settings

from .llm.base import ReplyRequest, Role, Turn
from .llm.tokens import MESSAGE_OVERHEAD_TOKENS, estimate_tokens

if TYPE_CHECKING:
    from datetime import datetime

    from .models import Character


class ContextMessage(Protocol):
    """What the context reads of a message. `sender_user` has `username` and
    `display_name`, `sender_character` has `name` (None when there is no such sender)."""

    role: str
    kind: str
    status: str
    text: str
    deleted_at: datetime | None
    sender_user_id: int | None
    sender_character_id: int | None

    @property
    def sender_user(self) -> Any: ...

    @property
    def sender_character(self) -> Any: ...


GROUP_NOTE = (
    "This is a group conversation with several people and characters. Each message "
    'from someone else starts with their name, like "Alex: ...". Reply only as {name}, '
    "in your own words, without a name in front."
)
OPENING_NOTE = "Earlier in this conversation, you said:\n\n{text}"


@dataclass(frozen=True)
class ContextInfo:
    messages_used: int  # messages whose text is in the request
    messages_total: int  # messages the character could have been sent
    trimmed: bool  # older messages did not fit the budget: the start is forgotten
    estimated_tokens: int  # the whole request: persona and notes plus history

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _Entry:
    role: Role
    text: str  # labeled with the speaker's name where needed
    tokens: int


def _speaker(message: ContextMessage) -> str:
    if message.sender_character_id is not None and message.sender_character is not None:
        return message.sender_character.name
    if message.sender_user is not None:
        return message.sender_user.display_name or message.sender_user.username
    return "Someone"


def _content(message: ContextMessage) -> str:
    text = (message.text or "").strip()
    kind = getattr(message, "kind", "text") or "text"
    if kind not in ("text", "system"):
        # Attachments are not sent to the model; it still learns one was shared.
        text = f"[{kind}] {text}".strip()
    return text


def _eligible(message: ContextMessage) -> bool:
    return (
        message.role != "system"
        and message.status not in ("failed", "streaming")
        and getattr(message, "deleted_at", None) is None
        and bool(_content(message))
    )


def _is_group(messages: list[ContextMessage], character: Character) -> bool:
    """More than one person, or another character, is speaking."""
    people = {m.sender_user_id for m in messages if m.sender_user_id is not None}
    others = {
        m.sender_character_id
        for m in messages
        if m.sender_character_id is not None and m.sender_character_id != character.pk
    }
    return len(people) > 1 or bool(others)


def build_reply_request(
    *,
    character: Character,
    messages: Sequence[ContextMessage],
    group: bool | None = None,
    model: str | None = None,
) -> tuple[ReplyRequest, ContextInfo]:
    """The request for `character`'s next reply, and what it holds.

    `group`: label each turn with its speaker's name (None: when the messages show more
    than one person or another character). Raises ValueError when no message from
    someone else is left to answer.
    """
    eligible = [m for m in messages if _eligible(m)]
    group = _is_group(eligible, character) if group is None else group

    entries: list[_Entry] = []
    for message in eligible:
        own = message.sender_character_id == character.pk or (
            message.role == "assistant" and message.sender_character_id is None
        )
        text = _content(message)
        if not own and (group or message.sender_character_id is not None):
            text = f"{_speaker(message)}: {text}"
        role: Role = "assistant" if own else "user"
        entries.append(_Entry(role, text, estimate_tokens(text) + MESSAGE_OVERHEAD_TOKENS))

    # The newest messages that fit, oldest dropped first; the newest is always kept.
    budget = character.context_budget
    kept = 0
    spent = 0
    for entry in reversed(entries):
        if kept and spent + entry.tokens > budget:
            break
        spent += entry.tokens
        kept += 1
    window = entries[len(entries) - kept :]
    trimmed = kept < len(entries)

    # The API wants the first turn from the user. Leading replies of the character are
    # moved into the system prompt when they opened the conversation (its greeting sets
    # the scene), and dropped when they are only where trimming happened to cut.
    opening: list[_Entry] = []
    while window and window[0].role == "assistant":
        opening.append(window.pop(0))
    while window and window[-1].role == "assistant":
        window.pop()  # nothing new to answer after them
    if not window:
        raise ValueError(f"Nothing for {character.name} to answer.")

    system = character.persona.strip()
    if group:
        system += "\n\n" + GROUP_NOTE.format(name=character.name)
    used = len(window)
    if opening and not trimmed:
        system += "\n\n" + OPENING_NOTE.format(text="\n\n".join(e.text for e in opening))
        used += len(opening)

    turns: list[Turn] = []
    for entry in window:
        if turns and turns[-1].role == entry.role:
            turns[-1] = Turn(entry.role, f"{turns[-1].text}\n\n{entry.text}")
        else:
            turns.append(Turn(entry.role, entry.text))

    last_user = next(
        (m for m in reversed(eligible) if m.role == "user" and m.sender_user is not None), None
    )
    request = ReplyRequest(
        system=system,
        turns=turns,
        model=model or character.model or settings.ANTHROPIC_DEFAULT_MODEL,
        temperature=character.temperature,
        max_tokens=character.max_output_tokens,
        character_name=character.name,
        greeting=character.greeting,
        user_name=_speaker(last_user) if last_user is not None else "",
    )
    estimated = (
        estimate_tokens(system)
        + MESSAGE_OVERHEAD_TOKENS
        + sum(estimate_tokens(t.text) + MESSAGE_OVERHEAD_TOKENS for t in turns)
    )
    info = ContextInfo(
        messages_used=used,
        messages_total=len(eligible),
        trimmed=trimmed,
        estimated_tokens=estimated,
    )
    return request, info
