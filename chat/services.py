"""Chat business rules. The websocket consumer, the REST views and the pages all call
these functions: one code path per rule, whichever transport brought the request."""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import F, Q
from django.utils import timezone

from accounts.models import User
from characters.models import Character
from characters.selectors import character_get_public
from chat import attachments, presence, ratelimit, replies, selectors
from chat.broadcast import frames_on_commit, message_created_on_commit
from chat.events import ConversationJoined, ReceiptUpdate, UserRef
from chat.models import Conversation, ConversationCharacter, Membership, Message
from chat.payloads import message_out
from chat.rendering import render_markdown
from config.errors import ApplicationError
from usage import selectors as usage_selectors
from usage import services as usage_services

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
                character_message_create(
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
        conversation=conv,
        last_seq=last_seq,
        read_seq=conv.read_seq,
        messages=messages,
        gap=gap,
        usage=usage_selectors.usage_for_conversation(user=user, conversation=conv),
        presence=presence.conversation_presence(conversation=conv, viewer_id=user.pk),
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


# One statement takes the seq (under the conversation's row lock, members only) and
# stores the message: a single round trip, and no ORM save machinery on the hottest path
# (`Model.save` was an eighth of the server's CPU under load). `%(quiet)s` restricts it
# to group conversations, for a send that needs no other write: then the statement runs
# on its own, atomic without BEGIN/COMMIT round trips.
_INSERT_MESSAGE = f"""
    WITH conv AS (
        UPDATE {Conversation._meta.db_table} c
        SET last_seq = c.last_seq + 1, last_message_at = %(now)s
        WHERE c.id = %(conversation)s
          AND (NOT %(quiet)s OR c.kind = %(group)s)
          AND EXISTS (
            SELECT 1 FROM {Membership._meta.db_table} m
            WHERE m.conversation_id = c.id AND m.user_id = %(user)s
          )
        RETURNING c.id, c.last_seq, c.kind, c.character_id
    ), stored AS (
        INSERT INTO {Message._meta.db_table} (
            conversation_id, seq, client_id, sender_user_id, role, kind, text, html,
            status, reply_to_id, metadata, created_at
        )
        SELECT conv.id, conv.last_seq, %(client_id)s, %(user)s, %(role)s, %(kind)s,
               %(text)s, %(html)s, %(status)s, %(reply_to)s, '{{}}'::jsonb, %(now)s
        FROM conv
        RETURNING id
    )
    SELECT stored.id, conv.last_seq, conv.kind, conv.character_id FROM conv, stored
"""


def _message_insert(
    *,
    user: User,
    conversation_id: int,
    client_id: str,
    text: str,
    html: str,
    kind: str,
    reply_to_id: int | None,
    now,
    quiet: bool,
) -> tuple[Message, str, int | None] | None:
    """Take the next seq and store the message; (message, conversation kind, its
    character) or None (not a member, or `quiet` and not a group). Outside a
    transaction only when `quiet`, on PostgreSQL (one statement)."""
    message = Message(
        conversation_id=conversation_id,
        client_id=client_id,
        sender_user=user,
        role=Message.Role.USER,
        kind=kind,
        text=text,
        html=html,
        reply_to_id=reply_to_id,
        created_at=now,
    )
    if connection.vendor != "postgresql":
        # SQLite on a bare machine: the same rules in two statements (in a transaction).
        taken = _take_seq(conversation_id=conversation_id, user_id=user.pk, now=now)
        if taken is None:
            return None
        message.seq, conversation_kind, character_id = taken
        message.save(force_insert=True)
        return message, conversation_kind, character_id
    params = {
        "now": now,
        "conversation": conversation_id,
        "quiet": quiet,
        "group": Conversation.Kind.GROUP,
        "user": user.pk,
        "client_id": client_id,
        "role": message.role,
        "kind": kind,
        "text": text,
        "html": html,
        "status": message.status,
        "reply_to": reply_to_id,
    }
    with connection.cursor() as cursor:
        cursor.execute(_INSERT_MESSAGE, params)
        row = cursor.fetchone()
    if row is None:
        return None
    message.id, message.seq, conversation_kind, character_id = row
    # As if loaded: the row exists, so a later save() updates it.
    message._state.adding = False
    message._state.db = connection.alias
    return message, conversation_kind, character_id


# Conversations known to be character conversations (a kind never changes): their
# messages go straight to the transaction instead of first trying the quiet statement,
# which refuses them. Bounded: forgetting one costs that statement once.
_NOT_QUIET: set[int] = set()
_NOT_QUIET_MAX = 100_000


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
    attachment = attachments.attachment_for_send(
        user=user,
        attachment_id=attachment_id,
        kind=kind,
        conversation_id=conversation_id,
        client_id=client_id,
    )
    _validate_text(text, required=attachment is None)  # with an attachment: a caption
    if (retry_after := ratelimit.send_retry_after(user_id=user.pk)) is not None:
        return _rate_limited(user, conversation_id, client_id, retry_after)
    if (
        reply_to_id is not None
        and not Message.objects.filter(pk=reply_to_id, conversation_id=conversation_id).exists()
    ):
        raise ApplicationError("bad_request", "reply_to is not a message of this conversation.")
    fields = {
        "user": user,
        "conversation_id": conversation_id,
        "client_id": client_id,
        "text": text,
        "html": render_markdown(text),
        "kind": kind,
        "reply_to_id": reply_to_id,
        "now": timezone.now(),
    }
    try:
        # Most messages are a group chat's: no attachment, no character spoken to, so
        # nothing to charge or answer and the message is the only write.
        if (
            attachment is None
            and connection.vendor == "postgresql"
            and conversation_id not in _NOT_QUIET
            and not replies.may_address_characters(text=text, reply_to_id=reply_to_id)
        ):
            # Nested in a caller's transaction, a savepoint keeps a failed retry from
            # breaking it (as `atomic` does below).
            with transaction.atomic() if connection.in_atomic_block else nullcontext():
                stored = _message_insert(**fields, quiet=True)
                if stored is not None:
                    message_created_on_commit(stored[0])
            if stored is not None:
                return PostResult(message=stored[0], created=True)
        with transaction.atomic():
            message = _message_post_in_transaction(fields=fields, attachment=attachment)
    except usage_services.QuotaExceeded as refused:
        usage_services.usage_refusal_record(refused=refused)  # the upgrade prompt, once
        raise
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


def _message_post_in_transaction(*, fields: dict, attachment) -> Message:
    """The message with what comes with it (attachment, usage charge, replies), in the
    caller's transaction."""
    stored = _message_insert(**fields, quiet=False)
    if stored is None:
        raise ApplicationError("not_found", "No such conversation.")
    message, conversation_kind, character_id = stored
    if conversation_kind == Conversation.Kind.CHARACTER:
        if len(_NOT_QUIET) >= _NOT_QUIET_MAX:
            _NOT_QUIET.clear()
        _NOT_QUIET.add(message.conversation_id)
    if attachment is not None:
        attachments.attachment_claim(attachment=attachment, message=message)
    message_created_on_commit(message)
    # After the INSERT, so that a retried client_id has failed on it already and is
    # never charged twice; a refusal rolls all of this back.
    usage_services.usage_charge_message(
        message=message, conversation_kind=conversation_kind, character_id=character_id
    )
    replies.replies_request_on_commit(
        conversation_id=message.conversation_id,
        character_ids=replies.characters_addressed(
            conversation_id=message.conversation_id,
            kind=conversation_kind,
            character_id=character_id,
            text=message.text,
            reply_to_id=message.reply_to_id,
        ),
    )
    return message


def _rate_limited(user: User, conversation_id: int, client_id: str, retry_after: int) -> PostResult:
    """Over the `send` rate: a retry of a stored message still gets it (guarantee 2);
    anything else is `rate_limited`."""
    stored = (
        selectors.messages_qs()
        .filter(conversation_id=conversation_id, sender_user=user, client_id=client_id)
        .first()
    )
    if stored is None:
        raise ApplicationError(
            "rate_limited",
            f"Too many messages: try again in {retry_after} s.",
            details={"retry_after": retry_after},
        )
    return PostResult(message=stored, created=False)


def character_message_create(
    *,
    conversation: Conversation,
    character: Character,
    text: str,
    status: str = Message.Status.COMPLETE,
    metadata: dict | None = None,
) -> Message:
    """A message of the character, with the next seq, announced on commit (a greeting;
    a reply, `streaming` and empty at first)."""
    seq = next_seq(conversation_id=conversation.pk, user_id=None, now=timezone.now())
    message = Message.objects.create(
        conversation=conversation,
        seq=seq,
        sender_character=character,
        role=Message.Role.ASSISTANT,
        kind=Message.Kind.TEXT,
        text=text,
        html=render_markdown(text),
        status=status,
        metadata=metadata or {},
    )
    message_created_on_commit(message)
    return message


def generation_stop(*, user: User, conversation_id: int) -> int | None:
    """Stop the character reply streaming in the conversation (any member may); its
    partial text is kept. The reply's id, or None if nothing was streaming."""
    selectors.membership_get(user_id=user.pk, conversation_id=conversation_id)
    return replies.reply_stop(conversation_id=conversation_id)


# --- Receipts


@dataclass(frozen=True)
class ReceiptMark:
    """What a member reports: everything up to `delivered_seq` arrived, everything up to
    `read_seq` was read (0: nothing new)."""

    conversation_id: int
    user_id: int
    user_name: str
    delivered_seq: int = 0
    read_seq: int = 0
    # The socket (channel name) that reported it: it is not sent the update back.
    origin: str | None = None


def receipt_mark(
    *, user: User, conversation_id: int, delivered_seq: int = 0, read_seq: int = 0
) -> None:
    """One member's markers, written at once (REST `POST .../read/`); `not_found` for a
    non-member."""
    selectors.membership_get(user_id=user.pk, conversation_id=conversation_id)
    receipts_apply(
        marks=[
            ReceiptMark(
                conversation_id=conversation_id,
                user_id=user.pk,
                user_name=user.name,
                delivered_seq=delivered_seq,
                read_seq=read_seq,
            )
        ]
    )


def receipts_apply(*, marks: list[ReceiptMark]) -> list[ReceiptUpdate]:
    """Move members' markers forward: never back, never past the conversation's last
    seq; read implies delivered. Any number of marks costs one statement on PostgreSQL.
    Each member whose markers moved gets a `receipt:update` to the conversation on
    commit. Marks of non-members match no row (callers check membership first)."""
    wanted: dict[tuple[int, int], ReceiptMark] = {}
    for mark in marks:
        key = (mark.conversation_id, mark.user_id)
        old = wanted.get(key, mark)
        wanted[key] = ReceiptMark(
            conversation_id=mark.conversation_id,
            user_id=mark.user_id,
            user_name=mark.user_name,
            # read implies delivered
            delivered_seq=max(old.delivered_seq, mark.delivered_seq, old.read_seq, mark.read_seq),
            read_seq=max(old.read_seq, mark.read_seq),
            origin=mark.origin if old.origin == mark.origin else None,
        )
    if not wanted:
        return []
    with transaction.atomic():
        if connection.vendor == "postgresql":
            moved = _markers_move(list(wanted.values()))
        else:
            moved = _markers_move_portable(list(wanted.values()))
        frames = [
            ReceiptUpdate(
                conversation=conversation_id,
                user=UserRef(
                    id=user_id, name=wanted[(conversation_id, user_id)].user_name, type="user"
                ),
                delivered_seq=delivered,
                read_seq=read,
            )
            for conversation_id, user_id, delivered, read in moved
        ]
        frames_on_commit(
            [
                (frame.conversation, frame, wanted[(frame.conversation, frame.user.id)].origin)
                for frame in frames
            ]
        )
    return frames


# Lock the rows to move in id order (concurrent batches cannot deadlock), then move
# them, in one statement; the marks come as four arrays, so the statement is the same
# for any number of them (no per-row SQL to build).
_MOVE_MARKERS = f"""
    WITH wanted AS (
        SELECT * FROM unnest(%s::bigint[], %s::bigint[], %s::bigint[], %s::bigint[])
            AS w(conversation_id, user_id, delivered_seq, read_seq)
    ), target AS (
        SELECT m.id,
               LEAST(w.delivered_seq, c.last_seq) AS delivered_seq,
               LEAST(w.read_seq, c.last_seq) AS read_seq
        FROM {Membership._meta.db_table} m
        JOIN wanted w ON w.conversation_id = m.conversation_id AND w.user_id = m.user_id
        JOIN {Conversation._meta.db_table} c ON c.id = m.conversation_id
        WHERE m.delivered_seq < LEAST(w.delivered_seq, c.last_seq)
           OR m.read_seq < LEAST(w.read_seq, c.last_seq)
        ORDER BY m.id
        FOR UPDATE OF m
    )
    UPDATE {Membership._meta.db_table} m
    SET delivered_seq = GREATEST(m.delivered_seq, target.delivered_seq),
        read_seq = GREATEST(m.read_seq, target.read_seq)
    FROM target WHERE m.id = target.id
    RETURNING m.conversation_id, m.user_id, m.delivered_seq, m.read_seq
"""


def _markers_move(marks: list[ReceiptMark]) -> list[tuple[int, int, int, int]]:
    """(conversation, user, delivered_seq, read_seq) of each membership that moved."""
    with connection.cursor() as cursor:
        cursor.execute(
            _MOVE_MARKERS,
            [
                [m.conversation_id for m in marks],
                [m.user_id for m in marks],
                [m.delivered_seq for m in marks],
                [m.read_seq for m in marks],
            ],
        )
        return cursor.fetchall()


def _markers_move_portable(marks: list[ReceiptMark]) -> list[tuple[int, int, int, int]]:
    """`_markers_move` for other databases (SQLite on a bare machine): the same rules
    through the ORM, slower (Python-built queries; SQLite serializes writers)."""
    match = Q()
    for mark in marks:
        match |= Q(conversation_id=mark.conversation_id, user_id=mark.user_id)
    wanted = {(m.conversation_id, m.user_id): m for m in marks}
    rows = (
        Membership.objects.select_for_update(of=("self",))
        .filter(match)
        .annotate(last_seq=F("conversation__last_seq"))
        .order_by("pk")
    )
    moved = []
    for row in rows:
        mark = wanted[(row.conversation_id, row.user_id)]
        delivered = max(row.delivered_seq, min(mark.delivered_seq, row.last_seq))
        read = max(row.read_seq, min(mark.read_seq, row.last_seq))
        if (delivered, read) != (row.delivered_seq, row.read_seq):
            row.delivered_seq, row.read_seq = delivered, read
            moved.append(row)
    Membership.objects.bulk_update(moved, ["delivered_seq", "read_seq"], batch_size=500)
    return [(m.conversation_id, m.user_id, m.delivered_seq, m.read_seq) for m in moved]
