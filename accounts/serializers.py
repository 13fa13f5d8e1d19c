from django.urls import reverse
from django.utils import timezone
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from accounts.models import User
from accounts.timezones import validate_time_zone
from usage.selectors import plan_held


class RegisterIn(serializers.Serializer):
    username = serializers.RegexField(r"^[\w.@+-]+\Z", max_length=150)
    password = serializers.CharField(max_length=128, write_only=True, trim_whitespace=False)
    email = serializers.EmailField(required=False, allow_blank=True, default="")
    display_name = serializers.CharField(
        required=False, allow_blank=True, max_length=80, default=""
    )


class UserOut(serializers.ModelSerializer):
    class Meta:
        model = User
        fields = ["id", "username", "display_name", "email"]


class LogoutIn(serializers.Serializer):
    refresh = serializers.CharField(help_text="The refresh token to blacklist.")


class PlanHeldOut(serializers.Serializer):
    slug = serializers.CharField()
    name = serializers.CharField()
    expires_at = serializers.DateTimeField(
        allow_null=True, help_text="When the user's own plan ends; null: never, or the default."
    )
    upgrade_url = serializers.CharField()


class MeOut(UserOut):
    """`GET /api/me/`: the user, their time zone (usage periods reset at its midnight)
    and their current `plan` (null when no plan is configured)."""

    plan = serializers.SerializerMethodField()

    class Meta(UserOut.Meta):
        fields = [*UserOut.Meta.fields, "time_zone", "plan"]

    @extend_schema_field(PlanHeldOut(allow_null=True))
    def get_plan(self, user: User) -> dict | None:
        held = plan_held(user_id=user.pk, now=timezone.now())
        if held.plan is None:
            return None
        return PlanHeldOut(
            {
                "slug": held.plan.slug,
                "name": held.plan.name,
                "expires_at": held.expires_at,
                "upgrade_url": reverse("upgrade"),
            }
        ).data


class MeUpdateIn(serializers.Serializer):
    time_zone = serializers.CharField(
        max_length=64,
        validators=[validate_time_zone],
        help_text="IANA name, e.g. Europe/Paris: usage quotas reset at midnight there.",
    )


class WsTicketOut(serializers.Serializer):
    ticket = serializers.CharField()
    expires_in = serializers.IntegerField()
