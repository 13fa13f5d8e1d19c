"""Log filter that keeps credentials out of every log line."""

import logging
import re

# ?token=..., &ticket=..., access_token=..., Bearer ... and JWT-shaped strings.
_CREDENTIAL = re.compile(
    r"((?:token|ticket|access_token|refresh)=)[^&\s\"']+"
    r"|(Bearer\s+)[A-Za-z0-9._~+/-]+=*"
    r"|eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+",
    re.IGNORECASE,
)


def redact(text: str) -> str:
    return _CREDENTIAL.sub(lambda m: (m.group(1) or m.group(2) or "") + "[redacted]", text)


class RedactCredentialsFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True
