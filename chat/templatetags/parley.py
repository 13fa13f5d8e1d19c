"""Small helpers for the page templates."""

from __future__ import annotations

from html import unescape

from django import template
from django.utils.html import strip_tags

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
    mine = message.sender.type == "user" and message.sender.id == getattr(user, "pk", None)
    who = "You" if mine else message.sender.name
    if message.status == "streaming" and not message.text:
        return f"{who} is typing…"
    if message.deleted:
        body = "Message deleted"
    else:
        # The rendered text without its markup (no stray ** or #).
        text = " ".join(unescape(strip_tags(message.html or "")).split()) or message.text
        label = KIND_LABELS.get(message.kind, "")
        body = f"{label}: {text}" if label and text else label or text
    return f"{who}: {body}"


@register.filter
def others(members, user) -> str:
    """The other members' names: "Alice, Bob"."""
    pk = getattr(user, "pk", None)
    return ", ".join(m.display_name or m.username for m in members if m.id != pk)
