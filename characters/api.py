from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.generics import ListAPIView, RetrieveAPIView

from characters.models import Character
from characters.selectors import character_list_public


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
