from django.contrib import admin

from chat.models import Conversation, Membership, Message


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    raw_id_fields = ("user",)
    readonly_fields = ("delivered_seq", "read_seq", "joined_at")


@admin.register(Conversation)
class ConversationAdmin(admin.ModelAdmin):
    list_display = ("id", "kind", "title", "character", "created_by", "last_seq", "last_message_at")
    list_filter = ("kind",)
    search_fields = ("title", "created_by__username", "character__slug")
    raw_id_fields = ("created_by",)
    readonly_fields = ("last_seq", "created_at", "last_message_at")
    inlines = [MembershipInline]


@admin.register(Message)
class MessageAdmin(admin.ModelAdmin):
    list_display = ("id", "conversation", "seq", "role", "kind", "status", "created_at")
    list_filter = ("role", "kind", "status")
    search_fields = ("text", "client_id")
    raw_id_fields = ("conversation", "sender_user", "reply_to")
    # seq and text are history: staff hide or delete, they do not rewrite.
    readonly_fields = ("conversation", "seq", "client_id", "html", "created_at")
    list_select_related = ("conversation",)


# Feedback and reply accounting (chat/admin_feedback.py).
from chat import admin_feedback  # noqa: E402, F401
