"""Parley settings: everything that differs between machines comes from the environment.

The defaults make `make run` work on a bare machine (SQLite, in-memory channel layer,
offline character responder); DATABASE_URL and REDIS_URL switch to PostgreSQL and Redis.
"""

import os
from datetime import timedelta
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value else default


def env_list(name: str, default: list[str]) -> list[str]:
    value = os.environ.get(name)
    if not value:
        return default
    return [item.strip() for item in value.split(",") if item.strip()]


DEBUG = env_bool("DEBUG", True)

SECRET_KEY = os.environ.get("SECRET_KEY", "")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("SECRET_KEY must be set when DEBUG is off.")
    SECRET_KEY = "django-insecure-parley-development-key-do-not-use-in-production"

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework_simplejwt.token_blacklist",
    "drf_spectacular",
    "channels",
    "accounts",
    "characters",
    "chat",
    "usage",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "config.csp.ContentSecurityPolicyMiddleware",
]

ROOT_URLCONF = "config.urls"
ASGI_APPLICATION = "config.asgi.application"
AUTH_USER_MODEL = "accounts.User"
LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database: SQLite for a bare machine, PostgreSQL via DATABASE_URL.
DATABASES = {
    "default": dj_database_url.config(
        default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}",
        conn_max_age=env_int("DB_CONN_MAX_AGE", 60),
        # No health check: it costs a `SELECT 1` round trip before the first query of
        # every unit of work; a connection broken by a database restart fails one
        # request and is replaced.
        conn_health_checks=False,
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Concurrent websocket writers on SQLite: wait for the lock instead of failing at once.
    DATABASES["default"]["OPTIONS"] = {"timeout": 20, "transaction_mode": "IMMEDIATE"}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Redis: channel layer and cache. Without REDIS_URL, in-process stand-ins.
REDIS_URL = os.environ.get("REDIS_URL", "")
if REDIS_URL:
    # Pub/sub layer: one PUBLISH per broadcast, fanned out inside each process, the
    # publishes of a moment sent in one pipeline (chat/layers.py).
    # It may drop under pressure like any layer, which is fine: the database is the
    # source of truth and clients fill seq gaps with `since` (docs/architecture.md).
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "chat.layers.BatchingPubSubChannelLayer",
            "CONFIG": {
                "hosts": [REDIS_URL],
                "prefix": os.environ.get("CHANNEL_LAYER_PREFIX", "parley"),
            },
        }
    }
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": os.environ.get("CACHE_KEY_PREFIX", "parley"),
        }
    }
else:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels.layers.InMemoryChannelLayer",
            "CONFIG": {"capacity": 1000, "expiry": 60},
        }
    }
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# --- Auth
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        # JWT first so that 401 responses carry `WWW-Authenticate: Bearer`.
        "rest_framework_simplejwt.authentication.JWTAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    # The API speaks JSON (contract section 6); uploads declare MultiPartParser themselves.
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "TEST_REQUEST_DEFAULT_FORMAT": "json",
    # drf-spectacular's, plus the `Error` body under each status an operation can answer.
    "DEFAULT_SCHEMA_CLASS": "config.schema.ParleyAutoSchema",
    "EXCEPTION_HANDLER": "config.api.exception_handler",
    "DEFAULT_THROTTLE_RATES": {
        "auth": os.environ.get("THROTTLE_AUTH", "20/min"),
        # Sending, per user, over REST and the websocket alike: enforced in the service
        # (chat/ratelimit.py), so both transports share one budget. "" turns it off.
        "send": os.environ.get("THROTTLE_SEND", "60/min"),
        "upload": os.environ.get("THROTTLE_UPLOAD", "30/min"),
    },
}
if DEBUG:
    REST_FRAMEWORK["DEFAULT_RENDERER_CLASSES"].append(
        "rest_framework.renderers.BrowsableAPIRenderer"
    )

SIMPLE_JWT = {
    "ACCESS_TOKEN_LIFETIME": timedelta(minutes=env_int("JWT_ACCESS_MINUTES", 15)),
    "REFRESH_TOKEN_LIFETIME": timedelta(days=env_int("JWT_REFRESH_DAYS", 14)),
    "ROTATE_REFRESH_TOKENS": True,
    "BLACKLIST_AFTER_ROTATION": True,
    "UPDATE_LAST_LOGIN": False,
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Parley API",
    "DESCRIPTION": "REST API of Parley, the real-time chat server for AI characters.",
    "VERSION": "1",
    # 3.1: the message and conversation schemas come from pydantic, whose JSON Schema
    # (`{"type": "null"}` in unions) is valid OpenAPI 3.1 but not 3.0.
    "OAS_VERSION": "3.1.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
}

# --- I18N
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

# --- Static and media files
STATIC_URL = "/static/"
STATIC_ROOT = Path(os.environ.get("STATIC_ROOT", BASE_DIR / "staticfiles"))
STATICFILES_DIRS = [BASE_DIR / "static"]
MEDIA_URL = "/media/"
MEDIA_ROOT = Path(os.environ.get("MEDIA_ROOT", BASE_DIR / "media"))
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": (
            "django.contrib.staticfiles.storage.StaticFilesStorage"
            if DEBUG
            # whitenoise's compressed manifest storage, also rewriting ES module imports
            # to the hashed names (config/storage.py)
            else "config.storage.StaticStorage"
        )
    },
}
WHITENOISE_USE_FINDERS = DEBUG

# --- Security (all on when DEBUG is off; `manage.py check --deploy` stays clean)
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", not DEBUG)
SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", not DEBUG)
CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", not DEBUG)
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0 if DEBUG else 31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = not DEBUG
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", not DEBUG)
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
# Content-Security-Policy (config/csp.py): no inline script, no foreign images. Only the
# API's Swagger page (a developer tool) may load its CDN and inline bootstrap.
PARLEY_CSP_EXTRA = {
    "/api/docs/": {
        "script-src": ["https://cdn.jsdelivr.net", "'unsafe-inline'"],
        "style-src": ["https://cdn.jsdelivr.net", "'unsafe-inline'"],
        "img-src": ["https://cdn.jsdelivr.net"],
    }
}
if env_bool("BEHIND_TLS_PROXY", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

# --- Logging: nothing that carries a credential is logged (see config/logging.py).
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"redact": {"()": "config.logging.RedactCredentialsFilter"}},
    "handlers": {
        "console": {"class": "logging.StreamHandler", "filters": ["redact"]},
    },
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
    "loggers": {
        "django.channels.server": {"level": "WARNING"},
        "daphne": {"level": "WARNING"},
    },
}

# --- Parley
PARLEY_MAX_FRAME_BYTES = env_int("PARLEY_MAX_FRAME_BYTES", 64 * 1024)
PARLEY_MAX_TEXT_CHARS = env_int("PARLEY_MAX_TEXT_CHARS", 4000)
PARLEY_HEARTBEAT_S = env_int("PARLEY_HEARTBEAT_S", 25)
PARLEY_JOIN_PAGE = env_int("PARLEY_JOIN_PAGE", 50)
PARLEY_RESUME_LIMIT = env_int("PARLEY_RESUME_LIMIT", 500)
PARLEY_HISTORY_MAX_LIMIT = 200
PARLEY_WS_TICKET_TTL_S = env_int("PARLEY_WS_TICKET_TTL_S", 60)
# How often each server process re-checks its sockets for expired tokens and
# deactivated users (one query per process, not per socket).
PARLEY_AUTH_SWEEP_S = env_int("PARLEY_AUTH_SWEEP_S", 30)
# Character replies (chat/replies.py)
PARLEY_CHARACTER_REPLIES = env_bool("PARLEY_CHARACTER_REPLIES", True)
PARLEY_STREAM_FLUSH_MS = env_int("PARLEY_STREAM_FLUSH_MS", 50)  # at most one delta frame per
PARLEY_REPLY_STALE_S = env_int("PARLEY_REPLY_STALE_S", 60)  # a silent reply is dead after
PARLEY_CONTEXT_MAX_MESSAGES = env_int("PARLEY_CONTEXT_MAX_MESSAGES", 400)
# Largest character card (JSON or PNG) accepted for import.
PARLEY_CARD_MAX_BYTES = env_int("PARLEY_CARD_MAX_BYTES", 5 * 1024 * 1024)
# Usage quotas (usage/): off, messages are not metered and carry no usage objects.
PARLEY_USAGE_METERING = env_bool("PARLEY_USAGE_METERING", True)
# Attachments (chat/attachments.py): the largest upload per kind, after sniffing.
PARLEY_ATTACHMENT_MAX_BYTES = {
    "image": env_int("PARLEY_MAX_IMAGE_BYTES", 10 * 1024 * 1024),
    "audio": env_int("PARLEY_MAX_AUDIO_BYTES", 20 * 1024 * 1024),
    "video": env_int("PARLEY_MAX_VIDEO_BYTES", 50 * 1024 * 1024),
    "file": env_int("PARLEY_MAX_FILE_BYTES", 20 * 1024 * 1024),
}
# Decoded size limit for images (a small file can decode to gigabytes: a "pixel bomb").
PARLEY_IMAGE_MAX_PIXELS = env_int("PARLEY_IMAGE_MAX_PIXELS", 40_000_000)
# ffprobe/ffmpeg (Debian package `ffmpeg`) give duration, size and waveform of audio and
# video; without them uploads still work, minus those fields.
PARLEY_FFPROBE = os.environ.get("PARLEY_FFPROBE", "ffprobe")
PARLEY_FFMPEG = os.environ.get("PARLEY_FFMPEG", "ffmpeg")
PARLEY_MEDIA_TIMEOUT_S = env_int("PARLEY_MEDIA_TIMEOUT_S", 30)
PARLEY_WAVEFORM_BARS = env_int("PARLEY_WAVEFORM_BARS", 64)

# --- Characters / LLM
# With ANTHROPIC_API_KEY, characters answer through Claude; without it, through the
# offline responder (characters/llm/offline.py), so a bare machine works.


def env_float(name: str, default: float) -> float:
    value = os.environ.get(name)
    return float(value) if value else default


ANTHROPIC_API_KEY = os.environ.get("ANTHROPIC_API_KEY", "")
ANTHROPIC_BASE_URL = os.environ.get("ANTHROPIC_BASE_URL", "")  # "": the SDK's default
# Used when a character has no model of its own.
ANTHROPIC_DEFAULT_MODEL = os.environ.get("ANTHROPIC_DEFAULT_MODEL", "claude-sonnet-4-6")
# Longest silence between two chunks of a stream (the SDK's default is 10 minutes).
ANTHROPIC_READ_TIMEOUT_S = env_float("ANTHROPIC_READ_TIMEOUT_S", 30.0)
ANTHROPIC_CONNECT_TIMEOUT_S = env_float("ANTHROPIC_CONNECT_TIMEOUT_S", 5.0)
# The SDK's HTTP transport: "aiohttp" (its `anthropic[aiohttp]` extra; C-parsed, about a
# third less CPU per streamed reply, docs/performance.md) or "httpx" (its default).
ANTHROPIC_HTTP_CLIENT = os.environ.get("ANTHROPIC_HTTP_CLIENT", "aiohttp")
if ANTHROPIC_HTTP_CLIENT not in ("aiohttp", "httpx"):
    raise ImproperlyConfigured("ANTHROPIC_HTTP_CLIENT must be 'aiohttp' or 'httpx'.")
# Parley's own retries before the first delta (the SDK's are off): overload, 429, 5xx,
# timeouts, cut streams. Backoff: base * 2^(n-1), capped, with jitter.
ANTHROPIC_MAX_RETRIES = env_int("ANTHROPIC_MAX_RETRIES", 3)
ANTHROPIC_BACKOFF_BASE_S = env_float("ANTHROPIC_BACKOFF_BASE_S", 0.5)
ANTHROPIC_BACKOFF_CAP_S = env_float("ANTHROPIC_BACKOFF_CAP_S", 8.0)
# No retry starts later than this after the first attempt (worst case otherwise:
# (retries + 1) x read timeout).
ANTHROPIC_RETRY_WINDOW_S = env_float("ANTHROPIC_RETRY_WINDOW_S", 45.0)
# Pace of the offline responder's stream.
PARLEY_OFFLINE_WORDS_PER_S = env_float("PARLEY_OFFLINE_WORDS_PER_S", 12.0)
# The SDK's HTTP client logs every request at INFO.
LOGGING["loggers"].update({name: {"level": "WARNING"} for name in ("httpx", "httpx2")})

# --- Live signals: typing (chat/typists.py), receipts (chat/receipts.py), presence
# (chat/presence.py). Seconds unless named otherwise.
PARLEY_PRESENCE = env_bool("PARLEY_PRESENCE", True)  # off: no presence kept or sent
PARLEY_TYPING_TIMEOUT_S = env_float("PARLEY_TYPING_TIMEOUT_S", 6.0)  # silence ends typing
PARLEY_TYPING_RELAY_S = env_float("PARLEY_TYPING_RELAY_S", 3.0)  # re-relay a start at most
# Receipt markers are written per server process in one transaction at most this often.
PARLEY_RECEIPT_FLUSH_MS = env_int("PARLEY_RECEIPT_FLUSH_MS", 100)
# The consumers' main loop: Parley's (chat/dispatch.py) or, off, Channels' own (to compare).
PARLEY_LEAN_DISPATCH = env_bool("PARLEY_LEAN_DISPATCH", True)
PARLEY_PRESENCE_HEARTBEAT_S = env_float("PARLEY_PRESENCE_HEARTBEAT_S", 10.0)
# A socket not refreshed for this long counts as gone (its process died).
PARLEY_PRESENCE_TTL_S = env_float("PARLEY_PRESENCE_TTL_S", 30.0)
# `offline` is announced this long after a user's last socket closed (a reload does
# not flicker).
PARLEY_PRESENCE_GRACE_S = env_float("PARLEY_PRESENCE_GRACE_S", 5.0)
PARLEY_PRESENCE_SWEEP_S = env_float("PARLEY_PRESENCE_SWEEP_S", 2.0)  # due offlines checked
# The server process's garbage collector (config/runtime.py): young-collection
# thresholds ("700,10,10" is Python's default) and whether to freeze what is loaded.
PARLEY_GC_THRESHOLDS = tuple(
    int(n) for n in env_list("PARLEY_GC_THRESHOLDS", ["50000", "20", "10"])
)
PARLEY_GC_FREEZE = env_bool("PARLEY_GC_FREEZE", True)
