"""REST for usage (contract section 6): `GET /api/usage/?character=slug`."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from chat.events import UsageListOut
from usage import selectors


class UsageQuery(serializers.Serializer):
    character = serializers.SlugField(max_length=64)


class UsageView(APIView):
    @extend_schema(
        operation_id="usage_list",
        parameters=[
            OpenApiParameter("character", str, required=True, description="a character's slug")
        ],
        responses={200: UsageListOut},
    )
    def get(self, request):
        query = UsageQuery(data=request.query_params)
        query.is_valid(raise_exception=True)
        usage = selectors.usage_for_character(
            user=request.user, slug=query.validated_data["character"]
        )
        return Response([u.model_dump(mode="json") for u in usage])
