import secrets
from pathlib import PurePosixPath

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone


class Conversation(models.Model):
    class Kind(models.TextChoices):
        CHARACTER = "character"
        GROUP = "group"

    kind = models.CharField(max_length=16, choices=Kind.choices)
    title = models.CharField(max_length=200, blank=True)
    character = models.ForeignKey(
        "characters.Character",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="conversations",
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        on_delete=models.SET_NULL,
        related_name="conversations_created",
    )
    # The highest seq handed out; bumped under the row lock by the insert that takes it.
    last_seq = models.PositiveBigIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    # Not indexed: every message updates this row, and an unindexed update stays a
    # cheap HOT update in PostgreSQL. Lists are per user, through Membership.
    last_message_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            # One private conversation per user and character: get-or-create is race-safe.
            models.UniqueConstraint(
                fields=["created_by", "character"],
                condition=Q(kind="character"),
                name="chat_one_character_conversation_per_user",
            ),
            models.CheckConstraint(
                condition=Q(kind="group") | Q(character__isnull=False),
                name="chat_character_conversation_has_character",
            ),
        ]

    def __str__(self) -> str:
        return self.title or f"Conversation {self.pk}"


class ConversationCharacter(models.Model):
    """A character taking part in a group conversation. It witnesses, and so remembers,
    only the messages after `joined_seq`."""

    conversation = models.ForeignKey(
        Conversation, on_delete=models.CASCADE, related_name="character_links"
    )
    character = models.ForeignKey(
        "characters.Character", on_delete=models.CASCADE, related_name="group_links"
    )
    joined_seq = models.PositiveBigIntegerField(default=0)
    joined_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["conversation", "character"], name="chat_character_once_per_group"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.character} in {self.conversation_id}"


class Membership(models.Model):
    class Role(models.TextChoices):
        OWNER = "owner"
        MEMBER = "member"

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships"
    )
    conversation = models.ForeignKey(
        Conversation, on_delete=models.CASCADE, related_name="memberships"
    )
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.MEMBER)
    delivered_seq = models.PositiveBigIntegerField(default=0)
    read_seq = models.PositiveBigIntegerField(default=0)
    joined_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["conversation", "user"], name="chat_one_membership_per_user"
            ),
        ]
        indexes = [models.Index(fields=["user", "conversation"])]

    def __str__(self) -> str:
        return f"{self.user} in {self.conversation_id}"


class Message(models.Model):
    class Role(models.TextChoices):
        USER = "user"
        ASSISTANT = "assistant"
        SYSTEM = "system"

    class Kind(models.TextChoices):
        TEXT = "text"
        AUDIO = "audio"
        IMAGE = "image"
        VIDEO = "video"
        FILE = "file"
        SYSTEM = "system"

    class Status(models.TextChoices):
        COMPLETE = "complete"
        STREAMING = "streaming"
        STOPPED = "stopped"
        FAILED = "failed"

    # No index of its own: unique (conversation, seq) serves every lookup by conversation.
    conversation = models.ForeignKey(
        Conversation, on_delete=models.CASCADE, related_name="messages", db_index=False
    )
    seq = models.PositiveBigIntegerField()
    # NULL, not "": messages without one (character replies) must not collide.
    client_id = models.CharField(max_length=64, null=True, blank=True)  # noqa: DJ001
    sender_user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    sender_character = models.ForeignKey(
        "characters.Character",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    role = models.CharField(max_length=16, choices=Role.choices)
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.TEXT)
    text = models.TextField(blank=True)
    html = models.TextField(blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.COMPLETE)
    reply_to = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    metadata = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    edited_at = models.DateTimeField(null=True, blank=True)
    deleted_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["conversation", "seq"]
        constraints = [
            models.UniqueConstraint(fields=["conversation", "seq"], name="chat_unique_seq"),
            # A retried send (same client_id from the same sender) can never be stored twice.
            models.UniqueConstraint(
                fields=["conversation", "sender_user", "client_id"],
                condition=Q(client_id__isnull=False),
                name="chat_unique_client_id_per_sender",
            ),
            models.CheckConstraint(condition=Q(seq__gte=1), name="chat_seq_positive"),
            # One character reply at a time per conversation, on every server process.
            models.UniqueConstraint(
                fields=["conversation"],
                condition=Q(status="streaming"),
                name="chat_one_streaming_reply",
            ),
        ]

    def __str__(self) -> str:
        return f"#{self.seq} in {self.conversation_id}"


class Generation(models.Model):
    """Accounting of one character reply: tokens, timings, outcome."""

    message = models.OneToOneField(Message, on_delete=models.CASCADE, related_name="generation")
    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="+")
    character = models.ForeignKey(
        "characters.Character", null=True, on_delete=models.SET_NULL, related_name="generations"
    )
    # Whose message the reply answers (for per-user totals).
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="generations"
    )
    provider = models.CharField(max_length=32)
    model = models.CharField(max_length=100, blank=True)
    status = models.CharField(max_length=16, choices=Message.Status.choices)
    error_code = models.CharField(max_length=32, blank=True)
    input_tokens = models.PositiveIntegerField(default=0)
    output_tokens = models.PositiveIntegerField(default=0)
    cache_read_tokens = models.PositiveIntegerField(default=0)
    cache_write_tokens = models.PositiveIntegerField(default=0)
    time_to_first_token_ms = models.PositiveIntegerField(null=True, blank=True)
    total_ms = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    def __str__(self) -> str:
        return f"Reply {self.message_id} ({self.status})"


class Feedback(models.Model):
    """A user's +1/-1 on a character reply (one per user and message; setting it again
    changes it)."""

    message = models.ForeignKey(Message, on_delete=models.CASCADE, related_name="feedback")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="message_feedback"
    )
    value = models.SmallIntegerField()
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["message", "user"], name="chat_one_feedback_per_user"),
            models.CheckConstraint(
                condition=Q(value__in=[-1, 1]), name="chat_feedback_plus_or_minus_one"
            ),
        ]
        verbose_name_plural = "feedback"

    def __str__(self) -> str:
        return f"{self.value:+d} on message {self.message_id}"


def attachment_upload_to(instance: "Attachment", filename: str) -> str:
    """A random name: nothing of the uploader's file name reaches the storage, and no
    name can be guessed. The extension is the sniffed type's (see chat/sniff.py)."""
    suffix = PurePosixPath(filename).suffix.lower()[:8]
    return f"attachments/{timezone.now():%Y/%m}/{secrets.token_urlsafe(18)}{suffix}"


class Attachment(models.Model):
    """An uploaded file. It belongs to its uploader until a message carries it (once);
    from then on it is served to the members of that message's conversation."""

    class Kind(models.TextChoices):
        AUDIO = "audio"
        IMAGE = "image"
        VIDEO = "video"
        FILE = "file"

    uploader = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="attachments"
    )
    kind = models.CharField(max_length=8, choices=Kind.choices)
    file = models.FileField(upload_to=attachment_upload_to, max_length=200)
    # The uploader's file name, cleaned (shown for `file` attachments); never a path.
    name = models.CharField(max_length=200, blank=True)
    content_type = models.CharField(max_length=100)  # sniffed from the content
    size = models.PositiveBigIntegerField()
    width = models.PositiveIntegerField(null=True, blank=True)
    height = models.PositiveIntegerField(null=True, blank=True)
    duration_s = models.FloatField(null=True, blank=True)
    waveform = models.JSONField(null=True, blank=True)  # ~64 peaks in 0..1 (audio)
    # Set, once, by the message that carries it (chat.attachments.attachment_claim).
    message = models.OneToOneField(
        Message, null=True, blank=True, on_delete=models.CASCADE, related_name="attachment"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"{self.kind} {self.pk}"
