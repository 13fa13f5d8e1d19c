from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse

from characters import services
from characters.llm import get_provider
from characters.models import Character
from config.errors import ApplicationError


class CardImportForm(forms.Form):
    card = forms.FileField(
        label="Character card",
        help_text="Character Card V1/V2: a .json file, or a .png with the card embedded.",
    )
    public = forms.BooleanField(
        required=False,
        label="Public",
        help_text="Unticked, the character is imported as a draft that only staff see.",
    )


class PreviewForm(forms.Form):
    persona = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 12, "cols": 100}),
        help_text="Edits here are only tried, not saved.",
    )
    preview_message = forms.CharField(
        label="Your message",
        max_length=settings.PARLEY_MAX_TEXT_CHARS,
        widget=forms.Textarea(attrs={"rows": 3, "cols": 100}),
    )


def provider_status() -> dict:
    """Which responder characters answer with, for the admin's banners."""
    provider = get_provider()
    return {"name": provider.name, "offline": provider.offline}


@admin.register(Character)
class CharacterAdmin(admin.ModelAdmin):
    list_display = ("name", "slug", "tagline", "is_public", "updated_at")
    list_filter = ("is_public",)
    search_fields = ("name", "slug", "tagline")
    prepopulated_fields = {"slug": ("name",)}
    actions = ["export_card_png", "export_card_json"]
    change_list_template = "admin/characters/character/change_list.html"
    change_form_template = "admin/characters/character/change_form.html"

    def get_urls(self):
        wrap = self.admin_site.admin_view
        return [
            path("import/", wrap(self.import_card_view), name="characters_character_import"),
            path(
                "<path:object_id>/card/<str:fmt>/",
                wrap(self.export_card_view),
                name="characters_character_card",
            ),
            path(
                "<path:object_id>/preview/",
                wrap(self.preview_view),
                name="characters_character_preview",
            ),
            *super().get_urls(),
        ]

    def changelist_view(self, request: HttpRequest, extra_context=None):
        extra_context = {**(extra_context or {}), "provider_status": provider_status()}
        return super().changelist_view(request, extra_context)

    def changeform_view(self, request, object_id=None, form_url="", extra_context=None):
        extra_context = {**(extra_context or {}), "provider_status": provider_status()}
        return super().changeform_view(request, object_id, form_url, extra_context)

    # --- Character cards

    def import_card_view(self, request: HttpRequest) -> HttpResponse:
        if not self.has_add_permission(request):
            raise PermissionDenied
        form = CardImportForm(request.POST or None, request.FILES or None)
        if request.method == "POST" and form.is_valid():
            upload = form.cleaned_data["card"]
            try:
                if upload.size > services.card_max_bytes():
                    raise ApplicationError(
                        "too_large",
                        f"A character card may be at most {services.card_max_bytes()} bytes.",
                    )
                character = services.character_import_card(
                    data=upload.read(),
                    filename=upload.name or "",
                    is_public=form.cleaned_data["public"],
                    created_by=request.user,
                )
            except ApplicationError as exc:
                form.add_error("card", exc.message)
            else:
                self.log_addition(request, character, "Imported from a character card.")
                state = "public" if character.is_public else "a draft (not public)"
                self.message_user(
                    request,
                    f"Imported “{character.name}” as {state}. Review the persona below.",
                    messages.SUCCESS,
                )
                return HttpResponseRedirect(
                    reverse("admin:characters_character_change", args=[character.pk])
                )
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": "Import character card",
            "form": form,
            "max_bytes": services.card_max_bytes(),
        }
        return TemplateResponse(request, "admin/characters/character/import_card.html", context)

    def export_card_view(self, request: HttpRequest, object_id: str, fmt: str) -> HttpResponse:
        character = self.get_object(request, unquote(object_id))
        if character is None or fmt not in ("json", "png"):
            return self._get_obj_does_not_exist_redirect(request, self.opts, object_id)
        if not self.has_view_permission(request, character):
            raise PermissionDenied
        return _card_download(character, fmt)

    @admin.action(description="Export as Character Card (PNG)", permissions=["view"])
    def export_card_png(self, request: HttpRequest, queryset):
        return self._export_one(request, queryset, "png")

    @admin.action(description="Export as Character Card (JSON)", permissions=["view"])
    def export_card_json(self, request: HttpRequest, queryset):
        return self._export_one(request, queryset, "json")

    def _export_one(self, request: HttpRequest, queryset, fmt: str) -> HttpResponse | None:
        characters = list(queryset[:2])
        if len(characters) != 1:
            self.message_user(
                request, "Select exactly one character to export as a card.", messages.WARNING
            )
            return None
        return _card_download(characters[0], fmt)

    # --- Persona preview

    def preview_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        character = self.get_object(request, unquote(object_id))
        if character is None:
            return self._get_obj_does_not_exist_redirect(request, self.opts, object_id)
        # Trying a persona costs a model call: editors only.
        if not self.has_change_permission(request, character):
            raise PermissionDenied
        result = None
        if request.method == "POST":
            # Posted from the change form (its unsaved persona) or from this page.
            form = PreviewForm(request.POST)
            if form.is_valid():
                try:
                    result = services.character_preview_reply(
                        character=character,
                        persona=form.cleaned_data["persona"],
                        message=form.cleaned_data["preview_message"],
                        user=request.user,
                    )
                except ApplicationError as exc:
                    form.add_error("preview_message", exc.message)
        else:
            form = PreviewForm(initial={"persona": character.persona})
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "original": character,
            "title": f"Try the persona of {character.name}",
            "form": form,
            "result": result,
            "provider_status": provider_status(),
        }
        return TemplateResponse(request, "admin/characters/character/preview.html", context)


def _card_download(character: Character, fmt: str) -> HttpResponse:
    card = services.character_export_card(character=character, fmt=fmt)
    response = HttpResponse(card.content, content_type=card.content_type)
    response["Content-Disposition"] = f'attachment; filename="{card.filename}"'
    return response
