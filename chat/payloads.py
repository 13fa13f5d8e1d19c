"""The one serializer of messages and conversations: model instances to the typed
objects of `chat.events`, used by REST responses and websocket frames alike."""

from __future__ import annotations

from django.core.exceptions import ObjectDoesNotExist
from django.urls import reverse

from chat.events import AttachmentOut, ConversationOut, MemberOut, MessageOut, Sender
from chat.models import Attachment, Conversation, Message

SYSTEM_SENDER = Sender(type="system", id=None, name="Parley", avatar=None)


def sender_of(message: Message) -> Sender:
    if message.sender_user_id is not None:
        user = message.sender_user
        avatar = user.avatar.url if user.avatar else None
        return Sender(type="user", id=user.pk, name=user.name, avatar=avatar)
    if message.sender_character_id is not None:
        character = message.sender_character
        return Sender(
            type="character", id=character.pk, name=character.name, avatar=character.avatar_url
        )
    return SYSTEM_SENDER


def attachment_out(attachment: Attachment) -> AttachmentOut:
    return AttachmentOut(
        id=attachment.pk,
        kind=attachment.kind,
        # Relative: the same object goes to every client, whatever host it used.
        url=reverse("attachment-file", kwargs={"attachment_id": attachment.pk}),
        content_type=attachment.content_type,
        size=attachment.size,
        duration_s=attachment.duration_s,
        width=attachment.width,
        height=attachment.height,
        waveform=attachment.waveform,
        name=attachment.name,
    )


def _attachment_of(message: Message) -> AttachmentOut | None:
    """Only messages of an attachment kind can have one, so text messages never touch
    the relation (loaded by `selectors.messages_qs`, set by `attachment_claim`)."""
    if message.kind not in Attachment.Kind.values or message.deleted_at is not None:
        return None
    try:
        return attachment_out(message.attachment)
    except ObjectDoesNotExist:
        return None


def message_out(message: Message) -> MessageOut:
    """Needs `sender_user`, `sender_character` and, for attachment kinds, `attachment`
    loaded (see selectors)."""
    deleted = message.deleted_at is not None
    return MessageOut(
        id=message.pk,
        conversation=message.conversation_id,
        seq=message.seq,
        client_id=message.client_id,
        sender=sender_of(message),
        role=message.role,
        kind=message.kind,
        text="" if deleted else message.text,
        html="" if deleted else message.html,
        attachment=_attachment_of(message),
        reply_to=message.reply_to_id,
        status=message.status,
        created_at=message.created_at,
        edited_at=message.edited_at,
        deleted=deleted,
        metadata=message.metadata or {},
    )


def conversation_out(
    *,
    conversation: Conversation,
    members: list[MemberOut],
    characters: list[str],
    read_seq: int,
    unread_count: int,
    last_message: Message | None,
) -> ConversationOut:
    """Needs `character` loaded."""
    return ConversationOut(
        id=conversation.pk,
        kind=conversation.kind,
        title=conversation.title or (conversation.character.name if conversation.character else ""),
        character=conversation.character.slug if conversation.character else None,
        members=members,
        characters=characters,
        last_seq=conversation.last_seq,
        read_seq=read_seq,
        unread_count=unread_count,
        last_message=message_out(last_message) if last_message else None,
    )
