"""REST plumbing shared by every app: errors as `{"code", "message"}` JSON bodies."""

from __future__ import annotations

from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.views import defaults
from rest_framework import exceptions, serializers, status
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
        response = Response(body, status=exc.http_status)
        if "retry_after" in exc.details:  # a service's rate limit, as DRF's throttles say it
            response["Retry-After"] = str(exc.details["retry_after"])
        return response
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


class StrictCharField(serializers.CharField):
    """A CharField that takes only JSON strings: `"client_id": 5` is a bad request, as
    on the websocket (chat/inbound.py), not silently the string "5"."""

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


# --- Django's own error pages: JSON under /api/ (a URL no route matches, e.g. a
# non-numeric id, or a crash outside DRF), the usual HTML pages elsewhere.


def _is_api(request: HttpRequest) -> bool:
    return request.path.startswith("/api/")


def not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    if _is_api(request):
        return JsonResponse({"code": "not_found", "message": "Not found."}, status=404)
    return defaults.page_not_found(request, exception)


def server_error(request: HttpRequest) -> HttpResponse:
    if _is_api(request):
        body = {"code": "server_error", "message": "Something went wrong on our side."}
        return JsonResponse(body, status=500)
    return defaults.server_error(request)
