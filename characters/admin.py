from django.contrib import admin

from characters.models import Character


@admin.register(Character)
class CharacterAdmin(admin.ModelAdmin):
    list_display = ("name", "slug", "tagline", "is_public", "updated_at")
    list_filter = ("is_public",)
    search_fields = ("name", "slug", "tagline")
    prepopulated_fields = {"slug": ("name",)}
