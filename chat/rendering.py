"""Markdown to sanitized HTML, done once when a message is stored."""

from __future__ import annotations

import html
import re
import threading

import markdown
import nh3

_ALLOWED_TAGS = {
    "p",
    "br",
    "strong",
    "em",
    "b",
    "i",
    "del",
    "code",
    "pre",
    "blockquote",
    "ul",
    "ol",
    "li",
    "a",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "hr",
    "table",
    "thead",
    "tbody",
    "tr",
    "th",
    "td",
}
_ALLOWED_ATTRIBUTES = {"a": {"href", "title"}, "code": {"class"}}
# Text that markdown would render as one plain paragraph: skip the parser.
_PLAIN = re.compile(r"[^\W\d_][^\W_]*(?:[ ,;:?!'\"%@/.~-]+[^\W_]+)*[.?!]?\Z")
_local = threading.local()


def _markdown() -> markdown.Markdown:
    md = getattr(_local, "md", None)
    if md is None:
        md = _local.md = markdown.Markdown(extensions=["fenced_code", "sane_lists", "tables"])
    return md


def render_markdown(text: str) -> str:
    """Sanitized HTML: no script, no event handlers, no images, safe links only."""
    if not text.strip():
        return ""
    if _PLAIN.match(text) and "  " not in text and " -- " not in text:
        return f"<p>{html.escape(text, quote=False)}</p>"
    raw = _markdown().reset().convert(text)
    return nh3.clean(
        raw,
        tags=_ALLOWED_TAGS,
        attributes=_ALLOWED_ATTRIBUTES,
        url_schemes={"http", "https", "mailto"},
        link_rel="noopener noreferrer nofollow ugc",
    )
