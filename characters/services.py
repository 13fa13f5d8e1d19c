"""Character services: card import and export (see `characters.cards`), persona preview."""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import time
from dataclasses import dataclass
from typing import Literal

from asgiref.sync import async_to_sync
from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.files.base import ContentFile
from django.db import IntegrityError, transaction

from characters import cards
from characters.context import build_reply_request
from characters.llm import get_provider
from characters.llm.base import ProviderError, ReplyDone, ReplyUsage, TextDelta
from characters.models import Character
from chat.models import Message
from config.errors import ApplicationError

logger = logging.getLogger(__name__)

CARD_MAX_BYTES_DEFAULT = 5 * 1024 * 1024
AVATAR_READ_MAX_BYTES = 32 * 1024 * 1024
CardFormat = Literal["json", "png"]


def card_max_bytes() -> int:
    return getattr(settings, "PARLEY_CARD_MAX_BYTES", CARD_MAX_BYTES_DEFAULT)


def character_import_card(
    *, data: bytes, filename: str = "", is_public: bool = False, created_by=None
) -> Character:
    """A new character from a Character Card (V1/V2 JSON, or PNG with the card embedded;
    the PNG's picture becomes the avatar). Everything is validated before anything is
    stored; imported characters are drafts (not public) unless `is_public`."""
    limit = card_max_bytes()
    if len(data) > limit:
        raise ApplicationError("too_large", f"A character card may be at most {limit} bytes.")
    if not data:
        raise ApplicationError("bad_request", "The file is empty.")
    fields = cards.card_to_character_fields(cards.card_load(data))
    is_png = data.startswith(cards.PNG_SIGNATURE)
    avatar = cards.avatar_from_png(data) if is_png else None
    character = Character(**fields, is_public=is_public)
    try:
        character.full_clean(exclude=["slug", "avatar"])
    except ValidationError as exc:
        raise ApplicationError(
            "bad_request",
            "The card does not fit a character.",
            details={"fields": exc.message_dict},
        ) from None

    base = fields["slug"]
    for _attempt in range(5):  # a concurrent import may take the same slug first
        character.pk = None
        character.slug = _unique_slug(base)
        try:
            with transaction.atomic():
                character.save()
                if avatar is not None:
                    # Inside the transaction: a storage failure leaves no character behind.
                    character.avatar.save(f"{character.slug}.png", ContentFile(avatar))
        except IntegrityError:
            continue
        break
    else:
        raise ApplicationError("server_error", "Could not find a free slug for the character.")
    logger.info(
        "character imported from card",
        extra={
            "character": character.slug,
            "user_id": getattr(created_by, "pk", None),
            "card_file": filename[:200],
        },
    )
    return character


def _unique_slug(base: str) -> str:
    taken = set(
        Character.objects.filter(slug__startswith=base[: cards.SLUG_MAX - 4]).values_list(
            "slug", flat=True
        )
    )
    if base not in taken:
        return base
    n = 2
    while True:
        suffix = f"-{n}"
        candidate = base[: cards.SLUG_MAX - len(suffix)].rstrip("-") + suffix
        if candidate not in taken:
            return candidate
        n += 1


@dataclass(frozen=True)
class CardFile:
    content: bytes
    content_type: str
    filename: str


def character_export_card(*, character: Character, fmt: CardFormat) -> CardFile:
    """The character as a V2 card: JSON, or a PNG of its avatar (or a placeholder)."""
    card = cards.character_to_card(character)
    if fmt == "json":
        content = json.dumps(card, ensure_ascii=False, indent=2).encode("utf-8")
        return CardFile(content, "application/json", f"{character.slug}.json")
    if fmt == "png":
        content = cards.card_to_png(card, _avatar_bytes(character))
        return CardFile(content, "image/png", f"{character.slug}.png")
    raise ApplicationError("bad_request", "The format must be `json` or `png`.")


def _avatar_bytes(character: Character) -> bytes | None:
    if not character.avatar:
        return None
    try:
        with character.avatar.storage.open(character.avatar.name, "rb") as handle:
            return handle.read(AVATAR_READ_MAX_BYTES)
    except OSError:  # a missing file: export with the placeholder
        logger.warning("avatar of %s unreadable", character.slug)
        return None


@dataclass(frozen=True)
class PreviewResult:
    persona: str  # the system prompt as sent (persona, and the greeting as the opening)
    message: str
    reply: str
    provider: str
    offline: bool
    model: str
    stop_reason: str
    usage: ReplyUsage | None
    time_to_first_token_ms: int | None
    total_ms: int
    error_code: str = ""
    error: str = ""


PREVIEW_TIMEOUT_S = 120


def character_preview_reply(
    *, character: Character, message: str, persona: str | None = None, user=None
) -> PreviewResult:
    """One exchange with the character as a new conversation would have it (greeting,
    then `message` from `user`), maybe with an unsaved `persona`: staff trying a persona.
    Nothing is stored. Provider failures are part of the result, not exceptions."""
    provider = get_provider()
    tried = copy.copy(character)  # the edited persona must not leak into the instance
    if persona is not None:
        tried.persona = persona
    history = []
    if tried.greeting.strip():
        history.append(
            Message(role="assistant", sender_character=tried, text=tried.greeting, seq=1)
        )
    history.append(Message(role="user", sender_user=user, text=message, seq=len(history) + 1))
    try:
        request, _ = build_reply_request(character=tried, messages=history, group=False)
    except ValueError as exc:  # nothing to answer: a blank message
        raise ApplicationError("bad_request", str(exc)) from None
    parts: list[str] = []
    done: list[ReplyDone] = []
    first_delta_at: list[float] = []

    async def exchange() -> None:
        async with asyncio.timeout(PREVIEW_TIMEOUT_S):
            async for event in provider.stream(request):
                if isinstance(event, TextDelta):
                    if not first_delta_at:
                        first_delta_at.append(time.monotonic())
                    parts.append(event.text)
                elif isinstance(event, ReplyDone):
                    done.append(event)

    started = time.monotonic()
    error_code = error = ""
    try:
        async_to_sync(exchange)()
    except ProviderError as exc:
        error_code, error = exc.code, exc.message
    except TimeoutError:
        error_code, error = "timeout", f"No complete reply within {PREVIEW_TIMEOUT_S} s."
    finished = time.monotonic()
    return PreviewResult(
        persona=request.system,
        message=message,
        reply="".join(parts),
        provider=provider.name,
        offline=provider.offline,
        model=done[0].model if done else request.model,
        stop_reason=done[0].stop_reason if done else "",
        usage=done[0].usage if done else None,
        time_to_first_token_ms=(
            round((first_delta_at[0] - started) * 1000) if first_delta_at else None
        ),
        total_ms=round((finished - started) * 1000),
        error_code=error_code,
        error=error,
    )
