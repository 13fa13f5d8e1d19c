from django.contrib import admin
from django.contrib.auth.admin import UserAdmin as BaseUserAdmin

from accounts.models import User
from usage.admin import UserPlanInline, grant_plan, user_usage_link


@admin.register(User)
class UserAdmin(BaseUserAdmin):
    fieldsets = (
        *BaseUserAdmin.fieldsets,
        ("Profile", {"fields": ("display_name", "avatar")}),
        ("Usage", {"fields": ("time_zone", "usage")}),
    )
    readonly_fields = ("usage",)
    list_display = ("username", "display_name", "email", "is_active", "is_staff", "date_joined")
    search_fields = ("username", "display_name", "email")
    # Usage quotas (usage/admin.py): the plan held, and granting one to many users.
    inlines = [UserPlanInline]
    actions = [grant_plan]

    @admin.display(description="Usage by character and kind")
    def usage(self, user: User) -> str:
        return user_usage_link(user.pk) if user.pk else "-"
