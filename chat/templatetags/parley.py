"""Small helpers for the page templates."""

from __future__ import annotations

from django import template

register = template.Library()

TONES = 8  # avatar colours, .tone-0 .. .tone-7 in parley.css (no inline styles: CSP)


@register.filter
def tone(value: object) -> int:
    """A stable colour index for a name or slug; static/js/chat/avatar.js computes the
    same one for avatars drawn in the browser."""
    h = 0
    for char in str(value):
        h = (h * 31 + ord(char)) % 2**32
    return h % TONES


@register.filter
def initials(name: object) -> str:
    """Up to two initials: "Ada Lovelace" -> "AL", "sage" -> "S"."""
    words = [w for w in str(name).replace("-", " ").split() if w[:1].isalnum()]
    return "".join(w[0] for w in words[:2]).upper() or "?"


KIND_LABELS = {
    "image": "📷 Photo",
    "audio": "🎤 Voice message",
    "video": "🎬 Video",
    "file": "📎 File",
}


@register.filter
def preview(message, user) -> str:
    """One line about a conversation's last message, for the conversation list."""
    if message is None:
        return "No messages yet"
    if message.deleted:
        body = "Message deleted"
    elif message.status == "streaming" and not message.text:
        body = "is typing…"
    else:
        body = KIND_LABELS.get(message.kind, "")
        text = " ".join(message.text.split())
        body = f"{body}: {text}" if body and text else body or text
    mine = message.sender.type == "user" and message.sender.id == getattr(user, "pk", None)
    who = "You" if mine else message.sender.name
    return f"{who}: {body}"
