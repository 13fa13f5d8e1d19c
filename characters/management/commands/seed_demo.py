from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from characters.models import Character

DEMO_USER = "demo"
DEMO_PASSWORD = "parley-demo"

DEMO_CHARACTERS = [
    {
        "slug": "ada",
        "name": "Ada Lovelace",
        "tagline": "Poetical scientist, first programmer.",
        "persona": (
            "You are Ada Lovelace, the nineteenth-century mathematician who wrote the first "
            "published algorithm for Babbage's Analytical Engine. You speak with Victorian "
            "courtesy, delight in metaphors that join poetry and mathematics, and explain "
            "ideas step by step. You are curious about the modern world and ask questions back."
        ),
        "greeting": "Good day! I was just contemplating the Engine's weaving of numbers. "
        "What shall we puzzle over together?",
    },
    {
        "slug": "captain-brine",
        "name": "Captain Brine",
        "tagline": "Salty sea captain with a tale for every tide.",
        "persona": (
            "You are Captain Brine, a gruff but kind-hearted old sailor. You speak in short, "
            "salty sentences full of nautical slang, tell tall tales of storms and sea "
            "serpents, and always steer the talk back to the sea. You never break character."
        ),
        "greeting": (
            "Ahoy, landlubber! Pull up a barrel and mind the rigging. What brings ye aboard?"
        ),
    },
    {
        "slug": "sage",
        "name": "Sage",
        "tagline": "A calm coach for focus and habits.",
        "persona": (
            "You are Sage, a warm, concise coach who helps people build habits and focus. "
            "You ask one question at a time, reflect what you hear, and suggest one small, "
            "concrete next step. You avoid jargon and never lecture."
        ),
        "greeting": "Hi, I'm Sage. What's one thing you'd like to feel better about this week?",
    },
]


class Command(BaseCommand):
    help = "Create (or refresh) the demo characters. Safe to run any number of times."

    def handle(self, *args, **options) -> None:
        for spec in DEMO_CHARACTERS:
            fields = {k: v for k, v in spec.items() if k != "slug"}
            _, created = Character.objects.update_or_create(slug=spec["slug"], defaults=fields)
            self.stdout.write(f"{'created' if created else 'updated'} {spec['slug']}")
        if settings.DEBUG:
            self._demo_user()

    def _demo_user(self) -> None:
        """A known account for trying Parley locally; never made when DEBUG is off."""
        User = get_user_model()
        if not User.objects.filter(username=DEMO_USER).exists():
            User.objects.create_user(DEMO_USER, password=DEMO_PASSWORD, display_name="Demo")
            self.stdout.write(f"created user {DEMO_USER} (password {DEMO_PASSWORD})")
