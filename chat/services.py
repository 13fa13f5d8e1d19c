"""Chat business rules. The websocket consumer, the REST views and the pages all call
these functions: one code path per rule, whichever transport brought the request."""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from accounts.models import User
from characters.models import Character
from characters.selectors import character_get_public
from chat import replies, selectors
from chat.broadcast import message_created_on_commit
from chat.events import ConversationJoined
from chat.models import Conversation, ConversationCharacter, Membership, Message
from chat.payloads import message_out
from chat.rendering import render_markdown
from config.errors import ApplicationError

# --- Conversations


def conversation_open_with_character(*, user: User, slug: str) -> tuple[Conversation, bool]:
    """The user's own conversation with a character, created on first use (with the
    character's greeting as message 1). Race-safe: a unique constraint backs it."""
    character = character_get_public(slug=slug)
    if character is None:
        raise ApplicationError("not_found", f"No character {slug!r}.")
    existing = Conversation.objects.filter(
        kind=Conversation.Kind.CHARACTER, created_by=user, character=character
    ).first()
    if existing is not None:
        return existing, False
    try:
        with transaction.atomic():
            conversation = Conversation.objects.create(
                kind=Conversation.Kind.CHARACTER, character=character, created_by=user
            )
            Membership.objects.create(
                user=user, conversation=conversation, role=Membership.Role.OWNER
            )
            if character.greeting:
                _character_message_create(
                    conversation=conversation, character=character, text=character.greeting
                )
    except IntegrityError:
        # Another device created it at the same moment: use theirs.
        existing = Conversation.objects.get(
            kind=Conversation.Kind.CHARACTER, created_by=user, character=character
        )
        return existing, False
    return conversation, True


def conversation_create_group(
    *,
    creator: User,
    title: str,
    member_usernames: list[str],
    character_slugs: list[str] | None = None,
) -> Conversation:
    title = title.strip()
    if not title or len(title) > 200:
        raise ApplicationError("bad_request", "A group needs a title of 1 to 200 characters.")
    usernames = set(member_usernames) - {creator.username}
    users = list(User.objects.filter(username__in=usernames, is_active=True))
    missing = usernames - {u.username for u in users}
    if missing:
        raise ApplicationError("bad_request", f"Unknown users: {', '.join(sorted(missing))}.")
    characters = _public_characters(character_slugs or [])
    with transaction.atomic():
        conversation = Conversation.objects.create(
            kind=Conversation.Kind.GROUP, title=title, created_by=creator
        )
        Membership.objects.bulk_create(
            [Membership(user=creator, conversation=conversation, role=Membership.Role.OWNER)]
            + [Membership(user=u, conversation=conversation) for u in users]
        )
        ConversationCharacter.objects.bulk_create(
            [ConversationCharacter(conversation=conversation, character=c) for c in characters]
        )
    return conversation


def _public_characters(slugs: list[str]) -> list[Character]:
    wanted = set(slugs)
    found = list(Character.objects.filter(slug__in=wanted, is_public=True))
    missing = wanted - {c.slug for c in found}
    if missing:
        raise ApplicationError("bad_request", f"Unknown characters: {', '.join(sorted(missing))}.")
    return found


def conversation_add_character(*, user: User, conversation_id: int, slug: str) -> None:
    """Bring a character into a group. It remembers only what is said from now on."""
    membership = selectors.membership_get(user_id=user.pk, conversation_id=conversation_id)
    if membership.conversation.kind != Conversation.Kind.GROUP:
        raise ApplicationError("bad_request", "Characters can only be added to groups.")
    (character,) = _public_characters([slug])
    with transaction.atomic():
        conversation = Conversation.objects.select_for_update().get(pk=conversation_id)
        ConversationCharacter.objects.get_or_create(
            conversation=conversation,
            character=character,
            defaults={"joined_seq": conversation.last_seq},
        )


def conversation_join(
    *, user: User, conversation_id: int, since: int | None = None
) -> ConversationJoined:
    """What a socket gets when it joins: the conversation, and either every message
    after `since` (up to the resume limit, `gap` if more) or the latest page."""
    conv = selectors.conversation_get(user_id=user.pk, conversation_id=conversation_id)
    if since is None:
        page = selectors.message_page(conversation_id=conv.id, limit=settings.PARLEY_JOIN_PAGE)
        gap = False
    else:
        page = selectors.message_page(
            conversation_id=conv.id, after=since, limit=settings.PARLEY_RESUME_LIMIT
        )
        gap = page.has_more
    streaming = [m.pk for m in page.messages if m.status == Message.Status.STREAMING]
    partials = replies.partial_texts(streaming) if streaming else {}
    for message in page.messages:
        if message.pk in partials:
            # The text so far; `message:stream` offsets continue from its length.
            message.text = partials[message.pk]
            message.html = render_markdown(message.text)
    messages = [message_out(m) for m in page.messages]
    # last_seq of the snapshot: the socket ignores broadcasts at or below it.
    last_seq = max(conv.last_seq, messages[-1].seq if messages else 0)
    return ConversationJoined(
        conversation=conv, last_seq=last_seq, read_seq=conv.read_seq, messages=messages, gap=gap
    )


# --- Messages


@dataclass(frozen=True)
class PostResult:
    message: Message
    created: bool  # False: a retry of a message already stored (same client_id)


def _validate_text(text: str, *, required: bool) -> None:
    limit = settings.PARLEY_MAX_TEXT_CHARS
    if len(text) > limit:
        raise ApplicationError("bad_request", f"Text is longer than {limit} characters.")
    if "\x00" in text:
        raise ApplicationError("bad_request", "Text may not contain NUL characters.")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ApplicationError("bad_request", "Text is not valid UTF-8 (lone surrogate).") from exc
    if required and not text.strip():
        raise ApplicationError("bad_request", "Text is empty.")


def _validate_client_id(client_id: str) -> None:
    if not 1 <= len(client_id) <= 64:
        raise ApplicationError("bad_request", "client_id must be 1 to 64 characters.")
    if not client_id.isprintable():
        raise ApplicationError("bad_request", "client_id must be printable text.")
    try:
        client_id.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ApplicationError("bad_request", "client_id is not valid UTF-8.") from exc


_NEXT_SEQ_FOR_MEMBER = f"""
    UPDATE {Conversation._meta.db_table} SET last_seq = last_seq + 1, last_message_at = %s
    WHERE id = %s AND EXISTS (
        SELECT 1 FROM {Membership._meta.db_table} m
        WHERE m.conversation_id = {Conversation._meta.db_table}.id AND m.user_id = %s
    )
    RETURNING last_seq, kind, character_id
"""


def next_seq(*, conversation_id: int, user_id: int | None, now) -> int | None:
    """Take the next seq under the conversation's row lock, held until commit: so seqs
    are gap-free and commit in order. With a user, only if they are a member."""
    row = _take_seq(conversation_id=conversation_id, user_id=user_id, now=now)
    return row[0] if row else None


def _take_seq(*, conversation_id: int, user_id: int | None, now) -> tuple | None:
    """(seq, conversation kind, character id), or None."""
    with connection.cursor() as cursor:
        if user_id is None:
            cursor.execute(
                f"UPDATE {Conversation._meta.db_table} SET last_seq = last_seq + 1, "
                "last_message_at = %s WHERE id = %s RETURNING last_seq, kind, character_id",
                [now, conversation_id],
            )
        else:
            cursor.execute(_NEXT_SEQ_FOR_MEMBER, [now, conversation_id, user_id])
        return cursor.fetchone()


def message_post(
    *,
    user: User,
    conversation_id: int,
    client_id: str,
    text: str = "",
    kind: str = Message.Kind.TEXT,
    reply_to_id: int | None = None,
    attachment_id: int | str | None = None,
) -> PostResult:
    """Validate, authorize, persist and broadcast a user's message. Idempotent on
    `client_id`: a retry returns the stored message and broadcasts nothing."""
    _validate_client_id(client_id)
    if kind != Message.Kind.TEXT or attachment_id is not None:
        raise ApplicationError("bad_request", "Attachments are not supported by this server yet.")
    _validate_text(text, required=True)
    if (
        reply_to_id is not None
        and not Message.objects.filter(pk=reply_to_id, conversation_id=conversation_id).exists()
    ):
        raise ApplicationError("bad_request", "reply_to is not a message of this conversation.")
    html = render_markdown(text)
    now = timezone.now()
    try:
        with transaction.atomic():
            taken = _take_seq(conversation_id=conversation_id, user_id=user.pk, now=now)
            if taken is None:
                raise ApplicationError("not_found", "No such conversation.")
            seq, conversation_kind, character_id = taken
            message = Message(
                conversation_id=conversation_id,
                seq=seq,
                client_id=client_id,
                sender_user=user,
                role=Message.Role.USER,
                kind=kind,
                text=text,
                html=html,
                reply_to_id=reply_to_id,
            )
            message.save(force_insert=True)
            message_created_on_commit(message)
            replies.replies_request_on_commit(
                conversation_id=conversation_id,
                character_ids=replies.characters_addressed(
                    conversation_id=conversation_id,
                    kind=conversation_kind,
                    character_id=character_id,
                    text=text,
                    reply_to_id=reply_to_id,
                ),
            )
    except IntegrityError:
        # The client_id is taken: this is a retry. The seq we took rolled back with it.
        existing = (
            selectors.messages_qs()
            .filter(conversation_id=conversation_id, sender_user=user, client_id=client_id)
            .first()
        )
        if existing is None:
            raise
        return PostResult(message=existing, created=False)
    return PostResult(message=message, created=True)


def _character_message_create(
    *, conversation: Conversation, character: Character, text: str
) -> Message:
    seq = next_seq(conversation_id=conversation.pk, user_id=None, now=timezone.now())
    message = Message.objects.create(
        conversation=conversation,
        seq=seq,
        sender_character=character,
        role=Message.Role.ASSISTANT,
        kind=Message.Kind.TEXT,
        text=text,
        html=render_markdown(text),
    )
    message_created_on_commit(message)
    return message


def generation_stop(*, user: User, conversation_id: int) -> int | None:
    """Stop the character reply streaming in the conversation (any member may); its
    partial text is kept. The reply's id, or None if nothing was streaming."""
    selectors.membership_get(user_id=user.pk, conversation_id=conversation_id)
    return replies.reply_stop(conversation_id=conversation_id)
