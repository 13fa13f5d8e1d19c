"""REST for conversations and messages (contract section 6): thin views over the same
services and selectors as the websocket, returning the same typed objects."""

from __future__ import annotations

from django.conf import settings
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from chat import selectors, services
from chat.events import ConversationListOut, ConversationOut, MessageOut, MessagePageOut
from chat.payloads import message_out
from config.api import StrictCharField


class ConversationCreateIn(serializers.Serializer):
    character = serializers.SlugField(required=False, max_length=64)
    title = serializers.CharField(required=False, max_length=200)
    members = serializers.ListField(
        child=serializers.CharField(max_length=150), required=False, max_length=100
    )
    characters = serializers.ListField(
        child=serializers.SlugField(max_length=64),
        required=False,
        max_length=20,
        help_text="Characters taking part in a group; they answer when @mentioned or replied to.",
    )

    def validate(self, attrs):
        group = "title" in attrs or "members" in attrs or "characters" in attrs
        if ("character" in attrs) == group:
            raise serializers.ValidationError(
                "Give either `character`, or `title` and `members` for a group."
            )
        return attrs


class CharacterAddIn(serializers.Serializer):
    character = serializers.SlugField(max_length=64)


class HistoryQuery(serializers.Serializer):
    before = serializers.IntegerField(required=False, min_value=0)
    after = serializers.IntegerField(required=False, min_value=0)
    limit = serializers.IntegerField(
        required=False, min_value=1, max_value=settings.PARLEY_HISTORY_MAX_LIMIT, default=50
    )


class MessageSendIn(serializers.Serializer):
    # Strict strings, as the websocket's `message:send` takes them.
    client_id = StrictCharField(min_length=1, max_length=64, trim_whitespace=False)
    kind = serializers.ChoiceField(
        choices=["text", "audio", "image", "video", "file"], default="text"
    )
    text = StrictCharField(required=False, allow_blank=True, trim_whitespace=False, default="")
    attachment = serializers.CharField(
        required=False, allow_null=True, default=None, help_text="id from POST /api/attachments/"
    )
    reply_to = serializers.IntegerField(required=False, allow_null=True, min_value=1, default=None)


def _dump(obj) -> dict:
    return obj.model_dump(mode="json")


class ConversationListCreate(APIView):
    error_statuses = {"post": {404}}  # an unknown character (config/schema.py)

    @extend_schema(operation_id="conversations_list", responses={200: ConversationListOut})
    def get(self, request):
        return Response([_dump(c) for c in selectors.conversation_list(user_id=request.user.pk)])

    @extend_schema(
        request=ConversationCreateIn, responses={200: ConversationOut, 201: ConversationOut}
    )
    def post(self, request):
        data = ConversationCreateIn(data=request.data)
        data.is_valid(raise_exception=True)
        if "character" in data.validated_data:
            conversation, created = services.conversation_open_with_character(
                user=request.user, slug=data.validated_data["character"]
            )
        else:
            conversation = services.conversation_create_group(
                creator=request.user,
                title=data.validated_data.get("title", ""),
                member_usernames=data.validated_data.get("members", []),
                character_slugs=data.validated_data.get("characters", []),
            )
            created = True
        body = selectors.conversation_get(user_id=request.user.pk, conversation_id=conversation.pk)
        return Response(
            _dump(body), status=status.HTTP_201_CREATED if created else status.HTTP_200_OK
        )


class ConversationDetail(APIView):
    @extend_schema(responses={200: ConversationOut})
    def get(self, request, conversation_id: int):
        body = selectors.conversation_get(user_id=request.user.pk, conversation_id=conversation_id)
        return Response(_dump(body))


class ConversationMessages(APIView):
    # Sending is rate limited (and, with quotas, metered) in the service: 429.
    error_statuses = {"post": {429}}  # see config/schema.py

    @extend_schema(
        parameters=[
            OpenApiParameter("before", int, description="newest `limit` messages below this seq"),
            OpenApiParameter("after", int, description="oldest `limit` messages above this seq"),
            OpenApiParameter("limit", int, description="1 to 200, default 50"),
        ],
        responses={200: MessagePageOut},
    )
    def get(self, request, conversation_id: int):
        query = HistoryQuery(data=request.query_params)
        query.is_valid(raise_exception=True)
        selectors.membership_get(user_id=request.user.pk, conversation_id=conversation_id)
        page = selectors.message_page(conversation_id=conversation_id, **query.validated_data)
        body = MessagePageOut(
            results=[message_out(m) for m in page.messages], has_more=page.has_more
        )
        return Response(_dump(body))

    @extend_schema(request=MessageSendIn, responses={200: MessageOut, 201: MessageOut})
    def post(self, request, conversation_id: int):
        data = MessageSendIn(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        result = services.message_post(
            user=request.user,
            conversation_id=conversation_id,
            client_id=values["client_id"],
            text=values["text"],
            kind=values["kind"],
            reply_to_id=values["reply_to"],
            attachment_id=values["attachment"],
        )
        return Response(
            _dump(message_out(result.message)),
            status=status.HTTP_201_CREATED if result.created else status.HTTP_200_OK,
        )


class ConversationCharacters(APIView):
    @extend_schema(request=CharacterAddIn, responses={200: ConversationOut})
    def post(self, request, conversation_id: int):
        data = CharacterAddIn(data=request.data)
        data.is_valid(raise_exception=True)
        services.conversation_add_character(
            user=request.user,
            conversation_id=conversation_id,
            slug=data.validated_data["character"],
        )
        body = selectors.conversation_get(user_id=request.user.pk, conversation_id=conversation_id)
        return Response(_dump(body))


class ReadIn(serializers.Serializer):
    seq = serializers.IntegerField(
        min_value=0, max_value=2**63 - 1, help_text="everything up to this seq was read"
    )


class ConversationRead(APIView):
    @extend_schema(request=ReadIn, responses={200: ConversationOut})
    def post(self, request, conversation_id: int):
        """Read marker: moves forward only (a lower seq changes nothing), never past the
        last message; read implies delivered. Answers with the conversation (its
        `read_seq` and `unread_count` updated)."""
        data = ReadIn(data=request.data)
        data.is_valid(raise_exception=True)
        services.receipt_mark(
            user=request.user, conversation_id=conversation_id, read_seq=data.validated_data["seq"]
        )
        body = selectors.conversation_get(user_id=request.user.pk, conversation_id=conversation_id)
        return Response(_dump(body))
