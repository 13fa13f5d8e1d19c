"""OpenAPI: every operation also documents the error bodies it can answer with, one
shared `Error` component (`{"code", "message", ...}`, see config/api.py), under the
statuses that apply to it:

- 400 when it takes a body or query parameters; 415 when it takes a body;
- 401 and 403 when it needs credentials (and 401 on SimpleJWT's token views);
- 404 when its path names an object, or when it needs credentials and takes a body
  or query parameters (which may name an object: a character's slug, an id);
- 429 when it is throttled (DRF throttles, or a view's `error_statuses`);
- anything else a view lists in `error_statuses` (a set, or {method: set}), e.g. 413.
"""

from __future__ import annotations

from drf_spectacular.openapi import AutoSchema
from drf_spectacular.plumbing import ResolvedComponent
from rest_framework_simplejwt.views import TokenViewBase

ERROR_SCHEMA = {
    "type": "object",
    "description": "An error (contract section 6). Services may add fields beside these.",
    "properties": {
        "code": {
            "type": "string",
            "description": (
                "bad_request, not_authenticated, forbidden, not_found, too_large, "
                "rate_limited, quota_exceeded, banned, ..."
            ),
        },
        "message": {"type": "string", "description": "For people."},
        "detail": {"type": "string", "description": "DRF's message, where DRF raised."},
        "fields": {"description": "Per-field validation messages (DRF's shape)."},
        "retry_after": {"type": "integer", "description": "Seconds, when rate limited."},
    },
    "required": ["code", "message"],
}

DESCRIPTIONS = {
    400: "Bad request: malformed JSON, wrong types, invalid values.",
    401: "No valid credentials (with `WWW-Authenticate: Bearer`).",
    403: "Authenticated, but not allowed.",
    404: "No such object, or not one of yours (a non-member learns nothing).",
    413: "Too large.",
    415: "Unsupported request content type.",
    429: "Rate limited (`Retry-After` says when to retry) or quota exceeded.",
}


class ParleyAutoSchema(AutoSchema):
    def get_operation(self, path, path_regex, path_prefix, method, registry):
        operation = super().get_operation(path, path_regex, path_prefix, method, registry)
        if operation is None:
            return None
        error = ResolvedComponent(
            name="Error", type=ResolvedComponent.SCHEMA, object="Error", schema=ERROR_SCHEMA
        )
        self.registry.register_on_missing(error)
        for status in sorted(self._error_statuses(operation)):
            operation["responses"].setdefault(
                str(status),
                {
                    "description": DESCRIPTIONS.get(status, "Error."),
                    "content": {"application/json": {"schema": error.ref}},
                },
            )
        return operation

    def _error_statuses(self, operation: dict) -> set[int]:
        statuses: set[int] = set()
        has_body = "requestBody" in operation
        if has_body or any(p.get("in") == "query" for p in operation.get("parameters", [])):
            statuses.add(400)
        if has_body:
            statuses.add(415)
        security = operation.get("security", [])
        if security and {} not in security:
            statuses |= {401, 403}
        if isinstance(self.view, TokenViewBase):
            statuses.add(401)
        if any(p.get("in") == "path" for p in operation.get("parameters", [])):
            statuses.add(404)
        elif 401 in statuses and 400 in statuses:
            statuses.add(404)  # a body or query naming an object (a slug, an id) of nobody
        if self.view.get_throttles():
            statuses.add(429)
        extra = getattr(self.view, "error_statuses", set())
        if isinstance(extra, dict):
            extra = extra.get(self.method.lower(), set())
        return statuses | set(extra)
