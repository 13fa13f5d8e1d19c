from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.generics import ListAPIView, RetrieveAPIView
from rest_framework.negotiation import BaseContentNegotiation, DefaultContentNegotiation
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.permissions import IsAdminUser
from rest_framework.response import Response
from rest_framework.views import APIView

from characters import services
from characters.models import Character
from characters.selectors import character_get_visible, character_list_public
from config.errors import ApplicationError


class CharacterOut(serializers.ModelSerializer):
    avatar = serializers.SerializerMethodField()

    class Meta:
        model = Character
        fields = ["id", "slug", "name", "tagline", "avatar", "greeting"]

    def get_avatar(self, obj: Character) -> str | None:
        return obj.avatar_url


@extend_schema(tags=["characters"])
class CharacterList(ListAPIView):
    serializer_class = CharacterOut

    def get_queryset(self):
        return character_list_public()


@extend_schema(tags=["characters"])
class CharacterDetail(RetrieveAPIView):
    serializer_class = CharacterOut
    lookup_field = "slug"

    def get_queryset(self):
        return character_list_public()


class CharacterStaffOut(CharacterOut):
    class Meta(CharacterOut.Meta):
        fields = [
            *CharacterOut.Meta.fields,
            "persona",
            "alternate_greetings",
            "tags",
            "is_public",
        ]


class CardImportIn(serializers.Serializer):
    file = serializers.FileField(allow_empty_file=True)
    public = serializers.BooleanField(default=False)


class CardExportQuery(serializers.Serializer):
    format = serializers.ChoiceField(choices=["json", "png"], default="json")


class _JSONOnly(BaseContentNegotiation):
    """Always JSON: `?format=` here picks the card's format, not a DRF renderer."""

    def select_parser(self, request, parsers):
        return DefaultContentNegotiation().select_parser(request, parsers)

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type


@extend_schema(tags=["characters"])
class CharacterCardImport(APIView):
    permission_classes = [IsAdminUser]
    parser_classes = [MultiPartParser, FormParser]
    error_statuses = {413}  # see config/schema.py

    @extend_schema(
        summary="Import a Character Card (V1/V2 JSON, or PNG with the card embedded)",
        request={"multipart/form-data": CardImportIn},
        responses={201: CharacterStaffOut},
    )
    def post(self, request):
        data = CardImportIn(data=request.data)
        data.is_valid(raise_exception=True)
        upload = data.validated_data["file"]
        limit = services.card_max_bytes()
        if upload.size > limit:  # before reading it into memory
            raise ApplicationError("too_large", f"A character card may be at most {limit} bytes.")
        character = services.character_import_card(
            data=upload.read(),
            filename=upload.name or "",
            is_public=data.validated_data["public"],
            created_by=request.user,
        )
        return Response(CharacterStaffOut(character).data, status=status.HTTP_201_CREATED)


@extend_schema(tags=["characters"])
class CharacterCardExport(APIView):
    content_negotiation_class = _JSONOnly

    @extend_schema(
        summary="Export a character as a Character Card V2 (JSON or PNG download)",
        parameters=[OpenApiParameter("format", str, enum=["json", "png"], default="json")],
        responses={
            (200, "application/json"): OpenApiTypes.OBJECT,
            (200, "image/png"): OpenApiTypes.BINARY,
        },
    )
    def get(self, request, slug: str):
        query = CardExportQuery(data=request.query_params)
        query.is_valid(raise_exception=True)
        character = character_get_visible(slug=slug, user=request.user)
        if character is None:
            raise ApplicationError("not_found", "No such character.")
        card = services.character_export_card(
            character=character, fmt=query.validated_data["format"]
        )
        response = HttpResponse(card.content, content_type=card.content_type)
        response["Content-Disposition"] = f'attachment; filename="{card.filename}"'
        return response
