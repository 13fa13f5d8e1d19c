"""The guarantees that the database itself holds, as migrated (not only as the models
declare them: a migration can lose an index the models still describe)."""

from __future__ import annotations

import pytest
from django.db import IntegrityError, connection, transaction

from chat import services
from chat.models import Message


def indexes_of(table: str) -> set[str]:
    with connection.cursor() as cursor:
        return set(connection.introspection.get_constraints(cursor, table))


@pytest.mark.django_db
def test_every_declared_constraint_exists_in_the_migrated_database():
    declared = {c.name for c in Message._meta.constraints}
    assert declared <= indexes_of(Message._meta.db_table)


@pytest.mark.django_db
def test_a_conversation_cannot_hold_two_streaming_replies(make_user, character):
    user = make_user()
    conversation, _ = services.conversation_open_with_character(user=user, slug="tester")

    def streaming(seq: int) -> Message:
        return Message.objects.create(
            conversation=conversation,
            seq=seq,
            sender_character=character,
            role=Message.Role.ASSISTANT,
            status=Message.Status.STREAMING,
        )

    streaming(100)
    with pytest.raises(IntegrityError), transaction.atomic():
        streaming(101)
