from django.db.models import QuerySet

from characters.models import Character


def character_list_public() -> QuerySet[Character]:
    return Character.objects.filter(is_public=True).order_by("name")


def character_get_public(*, slug: str) -> Character | None:
    return Character.objects.filter(slug=slug, is_public=True).first()


def character_get_visible(*, slug: str, user) -> Character | None:
    """Staff see every character (drafts included), everyone else the public ones."""
    qs = Character.objects.all() if user.is_staff else Character.objects.filter(is_public=True)
    return qs.filter(slug=slug).first()


def characters_by_slug(*, slugs: set[str]) -> dict[str, Character]:
    """Characters by slug in one query (public or not: a conversation keeps showing
    its character's name and picture after the character is unpublished)."""
    if not slugs:
        return {}
    return {c.slug: c for c in Character.objects.filter(slug__in=slugs)}
