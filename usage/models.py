"""Usage quotas: plans with limits per message kind and period, per-character
overrides, the plan a user holds, and the counters that meter them."""

from django.conf import settings
from django.core.validators import MinValueValidator
from django.db import models
from django.db.models import Q


class Kind(models.TextChoices):
    """What a message costs: `media` covers image, video and file messages."""

    TEXT = "text"
    AUDIO = "audio"
    MEDIA = "media"


class Period(models.TextChoices):
    DAY = "day"
    MONTH = "month"


class Plan(models.Model):
    slug = models.SlugField(max_length=40, unique=True)
    name = models.CharField(max_length=80)
    description = models.TextField(blank=True, help_text="Shown on the upgrade page.")
    price_label = models.CharField(
        max_length=80,
        blank=True,
        help_text='Shown on the upgrade page, e.g. "Free", "9 € a month".',
    )
    is_default = models.BooleanField(
        default=False,
        help_text="The plan of every user without a (current) plan of their own. Only one.",
    )
    ordering = models.PositiveSmallIntegerField(default=0)

    class Meta:
        ordering = ["ordering", "name"]
        constraints = [
            models.UniqueConstraint(
                fields=["is_default"],
                condition=Q(is_default=True),
                name="usage_one_default_plan",
                violation_error_message="Another plan is the default already: only one can be.",
            ),
        ]

    def __str__(self) -> str:
        return self.name


class PlanLimit(models.Model):
    """A plan's limit for one kind. No row for a kind: that kind is unlimited."""

    plan = models.ForeignKey(Plan, on_delete=models.CASCADE, related_name="limits")
    kind = models.CharField(max_length=8, choices=Kind.choices)
    period = models.CharField(max_length=8, choices=Period.choices, default=Period.DAY)
    limit = models.PositiveIntegerField(
        null=True, blank=True, help_text="Messages per period per character; empty = unlimited."
    )

    class Meta:
        ordering = ["plan", "kind"]
        constraints = [
            models.UniqueConstraint(fields=["plan", "kind"], name="usage_one_limit_per_plan_kind"),
        ]

    def __str__(self) -> str:
        return f"{self.plan}: {self.kind}"


class CharacterLimit(models.Model):
    """Replaces a plan's limit for one kind with one character (a costly character
    may allow fewer messages, a promoted one more)."""

    character = models.ForeignKey(
        "characters.Character", on_delete=models.CASCADE, related_name="usage_limits"
    )
    plan = models.ForeignKey(Plan, on_delete=models.CASCADE, related_name="character_limits")
    kind = models.CharField(max_length=8, choices=Kind.choices)
    period = models.CharField(max_length=8, choices=Period.choices, default=Period.DAY)
    limit = models.PositiveIntegerField(
        null=True, blank=True, help_text="Messages per period; empty = unlimited."
    )

    class Meta:
        ordering = ["character", "plan", "kind"]
        constraints = [
            models.UniqueConstraint(
                fields=["character", "plan", "kind"], name="usage_one_override_per_kind"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.character} on {self.plan}: {self.kind}"


class PlanBookVersion(models.Model):
    """One row whose `version` is drawn anew, at random, by each change to plans,
    limits and overrides (usage.signals, in the changing transaction). A process keeps
    what it read of them (`usage.selectors.plan_book`) while the version is the same: a
    change is seen by the next charge on every process. Random, not counted: a
    rolled-back change and a later one must never share a version."""

    ROW = 1  # the primary key of the one row (created by migration 0003)

    version = models.BigIntegerField(default=0)

    def __str__(self) -> str:
        return f"plan book version {self.version}"


class UserPlan(models.Model):
    """The plan a user holds; after `expires_at` they are back on the default plan."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="usage_plan"
    )
    plan = models.ForeignKey(Plan, on_delete=models.PROTECT, related_name="grants")
    expires_at = models.DateTimeField(null=True, blank=True, help_text="Empty: never expires.")
    granted_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"{self.user}: {self.plan}"


class UsageCounter(models.Model):
    """Units used by a user with a character, of a kind, in one period. The period
    starts at `period_start` (a date in the user's time zone: the day, or the first
    of the month). Charged only by usage.services.usage_charge's single statement."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="usage_counters"
    )
    character = models.ForeignKey(
        "characters.Character", on_delete=models.CASCADE, related_name="usage_counters"
    )
    kind = models.CharField(max_length=8, choices=Kind.choices)
    period = models.CharField(max_length=8, choices=Period.choices)
    period_start = models.DateField()
    used = models.PositiveIntegerField(default=0, validators=[MinValueValidator(0)])
    # When the user was told, once per period, that the limit is reached.
    exhausted_notified_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-period_start", "user", "character", "kind"]
        constraints = [
            # The conflict target of the metering upsert.
            models.UniqueConstraint(
                fields=["user", "character", "kind", "period", "period_start"],
                name="usage_one_counter_per_period",
            ),
        ]
        indexes = [models.Index(fields=["character", "kind", "period_start"])]

    def __str__(self) -> str:
        return f"{self.user} / {self.character} / {self.kind} {self.period} {self.period_start}"
