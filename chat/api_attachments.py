"""REST for attachments: `POST /api/attachments/` (multipart upload) and
`GET /api/attachments/{id}/file/` (the file, to those who may see it)."""

from __future__ import annotations

from django.http import FileResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.negotiation import BaseContentNegotiation, DefaultContentNegotiation
from rest_framework.parsers import MultiPartParser
from rest_framework.response import Response
from rest_framework.throttling import ScopedRateThrottle
from rest_framework.views import APIView

from chat.attachments import attachment_get_visible, attachment_upload, max_upload_bytes
from chat.events import AttachmentOut
from chat.models import Attachment
from chat.payloads import attachment_out
from config.errors import ApplicationError

MULTIPART_OVERHEAD = 64 * 1024  # boundaries and headers around the file part

# Served files never run as a page of this origin, whatever they contain.
FILE_CSP = "default-src 'none'; sandbox"


class AttachmentUploadIn(serializers.Serializer):
    file = serializers.FileField(help_text="The file; its type is sniffed from its content.")
    kind = serializers.ChoiceField(
        choices=Attachment.Kind.choices,
        required=False,
        help_text=(
            "Optional hint: whether a WebM or MP4 file is audio or video, used only when "
            "the server cannot look at its streams."
        ),
    )


@extend_schema(tags=["attachments"])
class AttachmentUpload(APIView):
    parser_classes = [MultiPartParser]
    throttle_classes = [ScopedRateThrottle]
    throttle_scope = "upload"
    error_statuses = {413}  # see config/schema.py

    @extend_schema(
        summary="Upload an attachment (multipart `file`) for `message:send`",
        request={"multipart/form-data": AttachmentUploadIn},
        responses={201: AttachmentOut},
    )
    def post(self, request):
        # Refuse an oversized body before parsing it into a temporary file.
        length = request.META.get("CONTENT_LENGTH") or "0"
        if length.isdigit() and int(length) > max_upload_bytes() + MULTIPART_OVERHEAD:
            raise ApplicationError(
                "too_large", f"Uploads may be at most {max_upload_bytes()} bytes."
            )
        data = AttachmentUploadIn(data=request.data)
        data.is_valid(raise_exception=True)
        attachment = attachment_upload(
            user=request.user,
            upload=data.validated_data["file"],
            kind=data.validated_data.get("kind"),
        )
        return Response(
            attachment_out(attachment).model_dump(mode="json"), status=status.HTTP_201_CREATED
        )


class _AnyAccept(BaseContentNegotiation):
    """A file goes to `<img>`, `<audio>` and players whatever they accept; errors are
    JSON."""

    def select_parser(self, request, parsers):
        return DefaultContentNegotiation().select_parser(request, parsers)

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type


@extend_schema(tags=["attachments"])
class AttachmentFile(APIView):
    content_negotiation_class = _AnyAccept

    @extend_schema(
        summary="Download an attachment (its uploader before it is sent, then the members)",
        responses={
            (200, "*/*"): OpenApiResponse(
                OpenApiTypes.BINARY, description="The file, with its sniffed Content-Type."
            )
        },
    )
    def get(self, request, attachment_id: int):
        attachment = attachment_get_visible(user=request.user, attachment_id=attachment_id)
        content_type = attachment.content_type
        if content_type.startswith("text/"):
            content_type += "; charset=utf-8"  # sniffed as UTF-8 on upload
        response = FileResponse(
            attachment.file.open("rb"),
            content_type=content_type,
            # Images, sound and video show inline; documents are downloaded.
            as_attachment=attachment.kind == Attachment.Kind.FILE,
            filename=attachment.name or None,
        )
        response["Content-Security-Policy"] = FILE_CSP
        response["X-Content-Type-Options"] = "nosniff"
        response["Cache-Control"] = "private, max-age=3600"
        return response
