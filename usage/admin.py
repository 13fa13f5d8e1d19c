"""Staff side of usage quotas: plans and their limits, character overrides, the plans
users hold (grant one until a date), counters (reset them), a user's usage."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html

from accounts.models import User
from config.errors import ApplicationError
from usage import selectors, services
from usage.models import CharacterLimit, Kind, Plan, PlanLimit, UsageCounter, UserPlan


class PlanLimitInline(admin.TabularInline):
    model = PlanLimit

    def get_extra(self, request, obj=None, **kwargs):
        # A new plan offers a row for each kind; a kind left out is unlimited.
        return len(Kind.values) if obj is None else 0


class CharacterLimitInline(admin.TabularInline):
    model = CharacterLimit
    extra = 0
    raw_id_fields = ("character",)


@admin.register(Plan)
class PlanAdmin(admin.ModelAdmin):
    list_display = ("name", "slug", "is_default", "ordering", "limits", "price_label")
    list_editable = ("ordering",)
    prepopulated_fields = {"slug": ("name",)}
    inlines = [PlanLimitInline, CharacterLimitInline]

    def get_queryset(self, request):
        return super().get_queryset(request).prefetch_related("limits")

    @admin.display(description="Limits per character")
    def limits(self, plan: Plan) -> str:
        by_kind = {row.kind: row for row in plan.limits.all()}
        parts = []
        for kind in Kind.values:
            row = by_kind.get(kind)
            if row is None or row.limit is None:
                parts.append(f"{kind}: unlimited")
            else:
                parts.append(f"{kind}: {row.limit}/{row.period}")
        return ", ".join(parts)


@admin.register(CharacterLimit)
class CharacterLimitAdmin(admin.ModelAdmin):
    list_display = ("character", "plan", "kind", "period", "limit")
    list_filter = ("plan", "kind", "character")
    raw_id_fields = ("character",)
    list_select_related = ("character", "plan")


# --- Plans users hold


class GrantPlanForm(forms.Form):
    plan = forms.ModelChoiceField(queryset=Plan.objects.all())
    expires_at = forms.DateTimeField(
        required=False,
        label="Until",
        help_text="Date and time (server time zone). Empty: the plan does not expire.",
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}),
    )


def grant_plan_view(modeladmin, request: HttpRequest, user_ids: list[int], title: str):
    """The intermediate page of the "grant a plan" actions, and its submission."""
    if not request.user.has_perm("usage.change_userplan"):
        raise PermissionDenied
    form = GrantPlanForm(request.POST if "apply" in request.POST else None)
    if form.is_valid():
        try:
            count = services.usage_plan_grant(
                user_ids=user_ids,
                plan=form.cleaned_data["plan"],
                expires_at=form.cleaned_data["expires_at"],
            )
        except ApplicationError as exc:
            form.add_error("expires_at", exc.message)
        else:
            modeladmin.message_user(
                request,
                f"{form.cleaned_data['plan']} granted to {count} user(s).",
                messages.SUCCESS,
            )
            return None  # back to the change list
    context = {
        **modeladmin.admin_site.each_context(request),
        "opts": modeladmin.opts,
        "title": title,
        "form": form,
        "users": User.objects.filter(pk__in=user_ids).order_by("username"),
        "selected": request.POST.getlist(ACTION_CHECKBOX_NAME),
        "action": request.POST.get("action", ""),
    }
    return TemplateResponse(request, "admin/usage/grant_plan.html", context)


@admin.action(description="Grant a plan until a date", permissions=["change"])
def grant_plan(modeladmin, request: HttpRequest, queryset: QuerySet[User]):
    """For the user change list (accounts.admin)."""
    return grant_plan_view(
        modeladmin, request, list(queryset.values_list("pk", flat=True)), "Grant a plan"
    )


class UserPlanInline(admin.StackedInline):
    """On the user's page: their plan and until when (empty: the default plan)."""

    model = UserPlan
    extra = 0
    max_num = 1
    can_delete = True
    readonly_fields = ("granted_at",)


@admin.register(UserPlan)
class UserPlanAdmin(admin.ModelAdmin):
    list_display = ("user", "plan", "expires_at", "is_current", "granted_at", "usage_link")
    list_filter = ("plan", ("expires_at", admin.EmptyFieldListFilter))
    search_fields = ("user__username", "user__display_name", "user__email")
    raw_id_fields = ("user",)
    list_select_related = ("user", "plan")
    readonly_fields = ("granted_at",)
    actions = ["grant_again"]

    @admin.display(boolean=True, description="Current")
    def is_current(self, grant: UserPlan) -> bool:
        return grant.expires_at is None or grant.expires_at > timezone.now()

    @admin.display(description="Usage")
    def usage_link(self, grant: UserPlan) -> str:
        return user_usage_link(grant.user_id)

    @admin.action(description="Grant these users a plan until a date", permissions=["change"])
    def grant_again(self, request: HttpRequest, queryset: QuerySet[UserPlan]):
        user_ids = list(queryset.values_list("user_id", flat=True))
        return grant_plan_view(self, request, user_ids, "Grant a plan")


# --- Counters


@admin.register(UsageCounter)
class UsageCounterAdmin(admin.ModelAdmin):
    list_display = (
        "user",
        "character",
        "kind",
        "period",
        "period_start",
        "used",
        "exhausted_notified_at",
        "usage_link",
    )
    list_filter = ("character", "kind", "period", "period_start")
    search_fields = ("user__username", "character__slug", "character__name")
    date_hierarchy = "period_start"
    raw_id_fields = ("user", "character")
    list_select_related = ("user", "character")
    readonly_fields = ("updated_at",)
    actions = ["reset_counters"]

    @admin.display(description="Usage")
    def usage_link(self, counter: UsageCounter) -> str:
        return user_usage_link(counter.user_id)

    @admin.action(description="Reset the selected counters (give the units back)")
    def reset_counters(self, request: HttpRequest, queryset: QuerySet[UsageCounter]) -> None:
        count = services.usage_counters_reset(
            counter_ids=list(queryset.values_list("pk", flat=True))
        )
        self.message_user(request, f"{count} counter(s) reset.", messages.SUCCESS)

    def get_urls(self):
        wrap = self.admin_site.admin_view
        return [
            path(
                "user/<int:user_id>/",
                wrap(self.user_usage_view),
                name="usage_usagecounter_user",
            ),
            *super().get_urls(),
        ]

    def user_usage_view(self, request: HttpRequest, user_id: int) -> HttpResponse:
        """A user's usage by character and kind: this period's, and the counters."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        user = get_object_or_404(User, pk=user_id)
        now = timezone.now()
        counters = (
            UsageCounter.objects.filter(user=user)
            .select_related("character")
            .order_by("-period_start", "character__name", "kind")[:200]
        )
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": f"Usage of {user.username}",
            "subject": user,
            "held": selectors.plan_held(user_id=user.pk, now=now),
            "usage": selectors.usage_of_user(user=user, now=now),
            "counters": counters,
        }
        return TemplateResponse(request, "admin/usage/user_usage.html", context)


def user_usage_link(user_id: int) -> str:
    url = reverse("admin:usage_usagecounter_user", args=[user_id])
    return format_html('<a href="{}">by character and kind</a>', url)
