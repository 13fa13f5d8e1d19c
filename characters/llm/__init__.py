"""The LLM provider boundary: everything Parley knows about model APIs lives here.

`get_provider()` is Claude when `ANTHROPIC_API_KEY` is set, else the offline responder.
"""

from __future__ import annotations

from django.core.signals import setting_changed
from django.dispatch import receiver

from .base import Provider

_provider: Provider | None = None


def get_provider() -> Provider:
    """The process-wide provider, built from settings on first use."""
    global _provider
    if _provider is None:
        from django.conf import settings

        if settings.ANTHROPIC_API_KEY:
            from .anthropic import AnthropicProvider  # the SDK is only imported when used

            _provider = AnthropicProvider.from_settings()
        else:
            from .offline import OfflineProvider

            _provider = OfflineProvider()
    return _provider


def provider_preload() -> None:
    """Build the provider and import what it will need (for Claude, the SDK: some
    3,000 modules). A server process calls this before it freezes what is loaded
    (config/runtime.py): imported on the first reply instead, the SDK's objects were
    walked by every full garbage collection (74-88 ms against 33.5, docs/performance.md)."""
    preload = getattr(get_provider(), "preload", None)
    if preload is not None:
        preload()


def reset_provider() -> None:
    """Forget the provider; the next `get_provider()` reads the settings again."""
    global _provider
    _provider = None


@receiver(setting_changed)
def _reset_on_setting_change(*, setting: str, **kwargs) -> None:
    # Tests change these with `override_settings` / pytest-django's `settings`.
    if setting.startswith(("ANTHROPIC_", "PARLEY_OFFLINE_")):
        reset_provider()
