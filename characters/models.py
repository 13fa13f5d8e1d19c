from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models


class Character(models.Model):
    """An AI persona people chat with."""

    slug = models.SlugField(max_length=64, unique=True)
    name = models.CharField(max_length=80)
    avatar = models.ImageField(upload_to="avatars/characters/", blank=True)
    tagline = models.CharField(max_length=200, blank=True)
    persona = models.TextField(help_text="System prompt: who the character is and how it speaks.")
    greeting = models.TextField(
        blank=True, help_text="First message of every new conversation with the character."
    )
    tags = models.JSONField(default=list, blank=True, help_text="A list of short labels.")
    alternate_greetings = models.JSONField(default=list, blank=True)
    # Generation settings (empty model: settings.ANTHROPIC_DEFAULT_MODEL).
    model = models.CharField(max_length=100, blank=True)
    temperature = models.FloatField(
        default=1.0, validators=[MinValueValidator(0.0), MaxValueValidator(1.0)]
    )
    max_output_tokens = models.PositiveIntegerField(
        default=1024, validators=[MinValueValidator(1), MaxValueValidator(64000)]
    )
    context_budget = models.PositiveIntegerField(
        default=8000,
        validators=[MinValueValidator(256)],
        help_text="Tokens of conversation history sent with each request (oldest dropped first).",
    )
    is_public = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def avatar_url(self) -> str | None:
        return self.avatar.url if self.avatar else None
