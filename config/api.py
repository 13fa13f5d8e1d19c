"""REST plumbing shared by every app: errors as `{"code", "message"}` JSON bodies."""

from __future__ import annotations

from django.core.exceptions import PermissionDenied
from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from config.errors import ApplicationError

_DRF_CODES = {
    status.HTTP_400_BAD_REQUEST: "bad_request",
    status.HTTP_401_UNAUTHORIZED: "not_authenticated",
    status.HTTP_403_FORBIDDEN: "forbidden",
    status.HTTP_404_NOT_FOUND: "not_found",
    status.HTTP_405_METHOD_NOT_ALLOWED: "method_not_allowed",
    status.HTTP_406_NOT_ACCEPTABLE: "not_acceptable",
    status.HTTP_413_REQUEST_ENTITY_TOO_LARGE: "too_large",
    status.HTTP_415_UNSUPPORTED_MEDIA_TYPE: "unsupported_media_type",
    status.HTTP_429_TOO_MANY_REQUESTS: "rate_limited",
}


def exception_handler(exc, context):
    """Map ApplicationError and DRF's own errors to the contract's error body."""
    if isinstance(exc, ApplicationError):
        body = {"code": exc.code, "message": exc.message, **exc.details}
        return Response(body, status=exc.http_status)
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied()
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    data = response.data
    code = _DRF_CODES.get(response.status_code, "bad_request")
    if isinstance(data, dict) and isinstance(data.get("detail"), str):
        # One error, not per-field ones; SimpleJWT adds its own `code` and `messages`.
        body = {"code": code, "message": str(data["detail"]), "detail": data["detail"]}
    else:
        # Field validation errors: keep DRF's per-field messages under `fields`.
        body = {"code": code, "message": "Invalid input.", "fields": data}
    response.data = body
    return response
