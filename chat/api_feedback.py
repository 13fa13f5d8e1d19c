"""REST for feedback on character replies (`POST /api/messages/{id}/feedback/`)."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from chat.feedback import message_feedback_set


class FeedbackIn(serializers.Serializer):
    value = serializers.IntegerField(help_text="1 or -1")


@extend_schema(tags=["messages"])
class MessageFeedback(APIView):
    @extend_schema(
        request=FeedbackIn,
        responses={
            200: inline_serializer(
                "FeedbackOut",
                {"message": serializers.IntegerField(), "value": serializers.IntegerField()},
            )
        },
    )
    def post(self, request, message_id: int):
        data = FeedbackIn(data=request.data)
        data.is_valid(raise_exception=True)
        feedback = message_feedback_set(
            user=request.user, message_id=message_id, value=data.validated_data["value"]
        )
        return Response({"message": feedback.message_id, "value": feedback.value})
