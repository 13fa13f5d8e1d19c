"""Schemathesis hooks for .ci/api_fuzz.py (loaded through SCHEMATHESIS_HOOKS).

One failure is not Parley's and is dropped, under exact conditions: daphne's HTTP layer
(Twisted) parses every POSTed multipart/form-data body itself before the application
sees it, and answers one it cannot parse (e.g. a multipart body with no parts) with a
bare 400: no body, no Content-Type. Any other response still counts.
"""

from __future__ import annotations

import schemathesis


@schemathesis.hook
def filter_failure(context, failure, case, response) -> bool:
    daphne_rejected_multipart = (
        (case.media_type or "").startswith("multipart/form-data")
        and case.method.upper() == "POST"
        and response.status_code == 400
        and not response.content
        and "content-type" not in response.headers
    )
    return not daphne_rejected_multipart
