"""Admin for feedback on character replies (point 8) and reply accounting (point 7):
lists with totals per character (and per user), over whatever the filters select.
Imported at the bottom of `chat/admin.py`."""

from __future__ import annotations

from django.contrib import admin
from django.db.models import Avg, Count, Q, QuerySet, Sum
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html

from chat.models import Feedback, Generation

TOTALS_ROWS = 50


def _with_totals(response, key: str, compute) -> None:
    """Add totals over the changelist's filtered queryset to its template context (not on
    redirects, e.g. after an action)."""
    context = getattr(response, "context_data", None)
    if context and "cl" in context:
        context[key] = compute(context["cl"].queryset.order_by())


def _message_link(message_id: int) -> str:
    url = reverse("admin:chat_message_change", args=[message_id])
    return format_html('<a href="{}">#{}</a>', url, message_id)


@admin.register(Feedback)
class FeedbackAdmin(admin.ModelAdmin):
    list_display = ("id", "rating", "character", "message_link", "user", "updated_at")
    list_filter = (
        "value",
        ("message__sender_character", admin.RelatedOnlyFieldListFilter),
        "updated_at",
    )
    search_fields = ("user__username", "message__text", "message__sender_character__slug")
    list_select_related = ("message__sender_character", "user")
    raw_id_fields = ("message", "user")
    readonly_fields = ("message", "user", "value", "created_at", "updated_at")
    date_hierarchy = "updated_at"
    change_list_template = "admin/chat/feedback/change_list.html"

    # Feedback is the users' word: staff read or delete it, never write it.
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    @admin.display(description="feedback", ordering="value")
    def rating(self, obj: Feedback) -> str:
        return "+1" if obj.value > 0 else "-1"

    @admin.display(description="character", ordering="message__sender_character__name")
    def character(self, obj: Feedback):
        return obj.message.sender_character or "—"

    @admin.display(description="reply", ordering="message_id")
    def message_link(self, obj: Feedback) -> str:
        return _message_link(obj.message_id)

    def changelist_view(self, request: HttpRequest, extra_context=None):
        response = super().changelist_view(request, extra_context)
        _with_totals(response, "feedback_totals", feedback_totals)
        return response


def feedback_totals(qs: QuerySet[Feedback]) -> list[dict]:
    """+1 and -1 counts per character, most rated first."""
    return list(
        qs.values("message__sender_character__name")
        .annotate(
            up=Count("id", filter=Q(value=1)),
            down=Count("id", filter=Q(value=-1)),
            total=Count("id"),
        )
        .order_by("-total", "message__sender_character__name")[:TOTALS_ROWS]
    )


_USAGE_TOTALS = {
    "replies": Count("id"),
    "input_tokens": Sum("input_tokens"),
    "output_tokens": Sum("output_tokens"),
    "cache_read_tokens": Sum("cache_read_tokens"),
    "cache_write_tokens": Sum("cache_write_tokens"),
    "avg_ttft_ms": Avg("time_to_first_token_ms"),
    "avg_total_ms": Avg("total_ms"),
    "failed": Count("id", filter=Q(status="failed")),
}


def usage_totals(qs: QuerySet[Generation]) -> dict[str, list[dict]]:
    """Tokens and timings per character and per user, the biggest spenders first."""
    order = ("-output_tokens", "-replies")
    return {
        "per_character": list(
            qs.values("character__name").annotate(**_USAGE_TOTALS).order_by(*order)[:TOTALS_ROWS]
        ),
        "per_user": list(
            qs.values("user__username").annotate(**_USAGE_TOTALS).order_by(*order)[:TOTALS_ROWS]
        ),
    }


# chat/admin.py may register Generation itself one day; then its admin wins.
if not admin.site.is_registered(Generation):

    @admin.register(Generation)
    class GenerationAdmin(admin.ModelAdmin):
        list_display = (
            "id",
            "message_link",
            "character",
            "user",
            "provider",
            "model",
            "status",
            "error_code",
            "input_tokens",
            "output_tokens",
            "cache_read_tokens",
            "time_to_first_token_ms",
            "total_ms",
            "created_at",
        )
        list_filter = (
            "provider",
            "status",
            "model",
            ("character", admin.RelatedOnlyFieldListFilter),
            "created_at",
        )
        search_fields = ("user__username", "character__slug", "model", "error_code")
        list_select_related = ("character", "user")
        date_hierarchy = "created_at"
        change_list_template = "admin/chat/generation/change_list.html"

        # Accounting is a record: read-only.
        def has_add_permission(self, request: HttpRequest) -> bool:
            return False

        def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
            return False

        @admin.display(description="reply", ordering="message_id")
        def message_link(self, obj: Generation) -> str:
            return _message_link(obj.message_id)

        def changelist_view(self, request: HttpRequest, extra_context=None):
            response = super().changelist_view(request, extra_context)
            _with_totals(response, "usage_totals", usage_totals)
            return response
