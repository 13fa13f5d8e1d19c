"""Reads of conversations and messages, shared by the websocket and REST."""

from __future__ import annotations

from dataclasses import dataclass

from django.db.models import Count, IntegerField, OuterRef, Q, QuerySet, Subquery
from django.db.models.functions import Coalesce

from chat.events import ConversationOut, MemberOut
from chat.models import ConversationCharacter, Membership, Message
from chat.payloads import conversation_out
from config.errors import ApplicationError


def messages_qs() -> QuerySet[Message]:
    # `attachment`: a LEFT JOIN on a unique key, so message_out needs no query per row.
    return Message.objects.select_related("sender_user", "sender_character", "attachment")


def membership_get(*, user_id: int, conversation_id: int) -> Membership:
    """The caller's membership, or `not_found`: a non-member learns nothing, not even
    whether the conversation exists."""
    membership = (
        Membership.objects.select_related("conversation__character")
        .filter(user_id=user_id, conversation_id=conversation_id)
        .first()
    )
    if membership is None:
        raise ApplicationError("not_found", "No such conversation.")
    return membership


@dataclass(frozen=True)
class MessagePage:
    messages: list[Message]
    has_more: bool


def message_page(
    *, conversation_id: int, before: int | None = None, after: int | None = None, limit: int = 50
) -> MessagePage:
    """Ascending by seq. `after`: the oldest `limit` above it; `before`: the newest
    `limit` below it; neither: the newest `limit`. One query (limit + 1 rows)."""
    qs = messages_qs().filter(conversation_id=conversation_id)
    if after is not None:
        qs = qs.filter(seq__gt=after)
    if before is not None:
        qs = qs.filter(seq__lt=before)
    if after is not None:
        rows = list(qs.order_by("seq")[: limit + 1])
        return MessagePage(messages=rows[:limit], has_more=len(rows) > limit)
    rows = list(qs.order_by("-seq")[: limit + 1])
    return MessagePage(messages=rows[:limit][::-1], has_more=len(rows) > limit)


def members_of(*, conversation_ids: list[int]) -> dict[int, list[MemberOut]]:
    """Members of many conversations in one query."""
    result: dict[int, list[MemberOut]] = {cid: [] for cid in conversation_ids}
    rows = (
        Membership.objects.filter(conversation_id__in=conversation_ids)
        .order_by("conversation_id", "joined_at", "id")
        .values_list("conversation_id", "user_id", "user__username", "user__display_name")
    )
    for cid, uid, username, display_name in rows:
        result[cid].append(MemberOut(id=uid, username=username, display_name=display_name))
    return result


def characters_of(*, conversations: list) -> dict[int, list[str]]:
    """Character slugs taking part in each conversation, in one query."""
    result = {c.pk: [c.character.slug] if c.character_id else [] for c in conversations}
    rows = (
        ConversationCharacter.objects.filter(conversation_id__in=list(result))
        .order_by("joined_at", "id")
        .values_list("conversation_id", "character__slug")
    )
    for cid, slug in rows:
        result[cid].append(slug)
    return result


def _unread_subquery(user_id: int) -> Subquery:
    """Messages from others above the caller's read marker, per membership row."""
    return Subquery(
        Message.objects.filter(
            conversation_id=OuterRef("conversation_id"), seq__gt=OuterRef("read_seq")
        )
        .exclude(sender_user_id=user_id)
        .order_by()
        .values("conversation_id")
        .annotate(n=Count("id"))
        .values("n")[:1],
        output_field=IntegerField(),
    )


def conversation_list(*, user_id: int) -> list[ConversationOut]:
    """The caller's conversations, newest activity first, in three queries whatever
    their number: memberships (with unread counts), members, last messages."""
    memberships = list(
        Membership.objects.filter(user_id=user_id)
        .select_related("conversation__character")
        .annotate(unread=Coalesce(_unread_subquery(user_id), 0))
        .order_by(
            Coalesce("conversation__last_message_at", "conversation__created_at").desc(),
            "-conversation_id",
        )
    )
    return _conversations_out(memberships)


def conversation_get(*, user_id: int, conversation_id: int) -> ConversationOut:
    membership = (
        Membership.objects.filter(user_id=user_id, conversation_id=conversation_id)
        .select_related("conversation__character")
        .annotate(unread=Coalesce(_unread_subquery(user_id), 0))
        .first()
    )
    if membership is None:
        raise ApplicationError("not_found", "No such conversation.")
    return _conversations_out([membership])[0]


def _conversations_out(memberships: list[Membership]) -> list[ConversationOut]:
    ids = [m.conversation_id for m in memberships]
    members = members_of(conversation_ids=ids)
    characters = characters_of(conversations=[m.conversation for m in memberships])
    last_keys = Q()
    for m in memberships:
        if m.conversation.last_seq:
            last_keys |= Q(conversation_id=m.conversation_id, seq=m.conversation.last_seq)
    last = {}
    if last_keys:
        last = {msg.conversation_id: msg for msg in messages_qs().filter(last_keys)}
    return [
        conversation_out(
            conversation=m.conversation,
            members=members[m.conversation_id],
            characters=characters[m.conversation_id],
            read_seq=m.read_seq,
            unread_count=m.unread,
            last_message=last.get(m.conversation_id),
        )
        for m in memberships
    ]


def receipts_of(*, conversation_id: int, exclude_user_id: int | None = None) -> list[dict]:
    """Every member's delivery and read markers (one query), shaped like the fields of
    `receipt:update`, so that a page can draw ticks before the first live update."""
    rows = (
        Membership.objects.filter(conversation_id=conversation_id)
        .exclude(user_id=exclude_user_id)
        .order_by("joined_at", "id")
        .values_list("user_id", "user__username", "user__display_name", "delivered_seq", "read_seq")
    )
    return [
        {
            "user": {"id": uid, "name": display_name or username, "type": "user"},
            "delivered_seq": delivered,
            "read_seq": read,
        }
        for uid, username, display_name, delivered, read in rows
    ]


def co_member_ids(*, user_id: int) -> list[int]:
    """Everyone who shares a conversation with the user, the user excluded: one query
    (the audience of the user's `presence:update`)."""
    shared = Membership.objects.filter(user_id=user_id).values("conversation_id")
    return list(
        Membership.objects.filter(conversation_id__in=shared)
        .exclude(user_id=user_id)
        .values_list("user_id", flat=True)
        .distinct()
    )
