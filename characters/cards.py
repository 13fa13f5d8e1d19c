"""Character Card V2 (the community's `chara_card_v2` format) to and from Parley characters.

A card is JSON, or a PNG whose `tEXt` chunk `chara` holds the JSON base64-encoded (V3
cards add a `ccv3` chunk; we read `chara` and fall back to `ccv3`). Import accepts V1
cards too (the same fields, flat). Everything here treats its input as hostile: any
problem is an `InvalidCard` (`bad_request`), never another exception.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import json
import re
import struct
import warnings
import zlib
from typing import Any

from django.utils.text import slugify
from PIL import Image, ImageDraw, ImageFont, PngImagePlugin

from config.errors import ApplicationError

SPEC_V2 = "chara_card_v2"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CARD_KEYWORDS = (b"chara", b"ccv3")  # in order of preference

NAME_MAX = 80  # Character.name
TAGLINE_MAX = 200  # Character.tagline
SLUG_MAX = 64  # Character.slug
TAG_MAX_CHARS = 50
TAGS_MAX = 50
GREETINGS_MAX = 100
AVATAR_MAX_SIDE = 1024  # stored avatars are downscaled to this
IMAGE_MAX_PIXELS = 25_000_000  # refuse to decode more (a 5 MiB PNG can be a pixel bomb)
TEXT_CHUNK_MAX = 16 * 1024 * 1024  # inflated zTXt/iTXt limit
# Paths the API uses under /api/characters/ that a slug must not shadow.
RESERVED_SLUGS = frozenset({"import"})

STRING_FIELDS = (
    "name",
    "description",
    "personality",
    "scenario",
    "first_mes",
    "mes_example",
    "creator_notes",
    "system_prompt",
    "post_history_instructions",
    "creator",
    "character_version",
)
# Persona sections, in order, with their headings.
PERSONA_SECTIONS = (
    ("system_prompt", "Instructions"),
    ("description", "Description"),
    ("personality", "Personality"),
    ("scenario", "Scenario"),
    ("mes_example", "Example dialogue"),
)
_CHAR_MACRO = re.compile(r"\{\{char\}\}|<BOT>", re.IGNORECASE)
_FIRST_SENTENCE = re.compile(r"^(.+?[.!?…])(?=\s|$)", re.DOTALL)


class InvalidCard(ApplicationError):
    def __init__(self, message: str) -> None:
        super().__init__("bad_request", message)


# --- Reading


def card_load(data: bytes) -> dict:
    """The card in `data`, JSON or PNG (sniffed from the bytes, not the file name)."""
    if data.startswith(PNG_SIGNATURE):
        return card_from_png(data)
    return _json_object(data, what="The file", invalid="is neither a PNG nor valid UTF-8 JSON")


def card_from_png(data: bytes) -> dict:
    """The card embedded in a PNG's `chara` (or `ccv3`) text chunk."""
    texts = _png_card_chunks(data)
    raw = next((texts[k] for k in CARD_KEYWORDS if k in texts), None)
    if raw is None:
        raise InvalidCard("The PNG carries no character card (no `chara` text chunk).")
    raw = raw.strip()
    if raw.startswith(b"{"):
        return _json_object(raw, what="The card")  # a few old tools store plain JSON
    try:
        compact = re.sub(rb"\s+", b"", raw)
        decoded = base64.b64decode(compact + b"=" * (-len(compact) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidCard("The PNG's card is not valid base64.") from None
    return _json_object(decoded, what="The PNG's card")


def _json_object(raw: bytes, *, what: str, invalid: str = "is not valid UTF-8 JSON") -> dict:
    def no_constants(name: str) -> Any:
        raise ValueError(f"{name} is not JSON")

    try:
        value = json.loads(raw.decode("utf-8-sig"), parse_constant=no_constants)
    except (UnicodeDecodeError, ValueError, RecursionError):
        # RecursionError: deeply nested junk; ValueError covers absurdly long integers.
        raise InvalidCard(f"{what} {invalid}.") from None
    if not isinstance(value, dict):
        raise InvalidCard(f"{what} must be a JSON object.")
    return value


TEXT_CHUNKS = (b"tEXt", b"zTXt", b"iTXt")


def _png_chunks(data: bytes) -> list[tuple[bytes, int, int]]:
    """(type, start, end of its data) of each chunk through IEND, without decoding."""
    if not data.startswith(PNG_SIGNATURE):
        raise InvalidCard("Not a PNG file.")
    chunks: list[tuple[bytes, int, int]] = []
    pos = len(PNG_SIGNATURE)
    while True:
        if pos + 8 > len(data):
            raise InvalidCard("The PNG is truncated.")
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        start, end = pos + 8, pos + 8 + length
        if end + 4 > len(data):
            raise InvalidCard("The PNG is truncated.")
        chunks.append((kind, start, end))
        if kind == b"IEND":
            return chunks
        pos = end + 4  # past the CRC


def _png_card_chunks(data: bytes) -> dict[bytes, bytes]:
    """Text of the card chunks (`chara`, `ccv3`)."""
    found: dict[bytes, bytes] = {}
    for kind, start, end in _png_chunks(data):
        if kind not in TEXT_CHUNKS:
            continue
        body = data[start:end]
        keyword = body.partition(b"\0")[0]
        # Only the first chunk per keyword is read: repeated compressed chunks must not
        # multiply the inflating work.
        if keyword in CARD_KEYWORDS and keyword not in found:
            found[keyword] = _text_chunk(kind, body)
    return found


def _png_without_text(data: bytes) -> bytes:
    """The PNG without its text chunks: Pillow need not parse (and limit) the card."""
    kept = (data[start - 8 : end + 4] for kind, start, end in _png_chunks(data))
    return PNG_SIGNATURE + b"".join(chunk for chunk in kept if chunk[4:8] not in TEXT_CHUNKS)


def _text_chunk(kind: bytes, body: bytes) -> bytes:
    _keyword, _, rest = body.partition(b"\0")
    if kind == b"tEXt":
        return rest
    if kind == b"zTXt":  # compression method byte, then zlib data
        return _inflate(rest[1:])
    # iTXt: compression flag, method, language tag\0, translated keyword\0, text
    if len(rest) < 2:
        raise InvalidCard("The PNG's card chunk is malformed.")
    compressed, tail = rest[0], rest[2:]
    parts = tail.split(b"\0", 2)
    if len(parts) != 3:
        raise InvalidCard("The PNG's card chunk is malformed.")
    return _inflate(parts[2]) if compressed else parts[2]


def _inflate(data: bytes) -> bytes:
    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(data, TEXT_CHUNK_MAX)
    except zlib.error:
        raise InvalidCard("The PNG's card chunk is not valid zlib data.") from None
    if inflater.unconsumed_tail:
        raise InvalidCard("The PNG's card chunk is too large.")
    return out


# --- Card -> Parley fields


def card_data(card: dict) -> dict[str, Any]:
    """The card's fields, type-checked and cleaned: V2/V3 `data`, or a flat V1 card."""
    data = card.get("data") if isinstance(card.get("data"), dict) else card
    out: dict[str, Any] = {}
    for field in STRING_FIELDS:
        value = data.get(field)
        if value is None:
            out[field] = ""
        elif isinstance(value, str):
            out[field] = _clean(value)
        else:
            raise InvalidCard(f"`{field}` must be a string.")
    out["alternate_greetings"] = _string_list(
        data, "alternate_greetings", limit=GREETINGS_MAX, max_chars=None
    )
    out["tags"] = _string_list(data, "tags", limit=TAGS_MAX, max_chars=TAG_MAX_CHARS)
    extensions = data.get("extensions")
    if extensions is not None and not isinstance(extensions, dict):
        raise InvalidCard("`extensions` must be an object.")
    out["extensions"] = extensions or {}
    out["name"] = out["name"].strip()[:NAME_MAX].strip()
    if not out["name"]:
        raise InvalidCard("The card has no name.")
    return out


def card_to_character_fields(card: dict) -> dict[str, Any]:
    """Character model fields from a card (`slug` is a base; the service makes it unique)."""
    data = card_data(card)
    name = data["name"]
    text = {field: _CHAR_MACRO.sub(name, data[field]) for field in STRING_FIELDS}
    fields: dict[str, Any] = {
        "name": name,
        "slug": slug_base(name),
        "persona": compose_persona(text) or f"You are {name}.",
        "greeting": text["first_mes"].strip(),
        "alternate_greetings": [_CHAR_MACRO.sub(name, g) for g in data["alternate_greetings"]],
        "tags": data["tags"],
        "tagline": _tagline(text["creator_notes"], text["description"]),
    }
    fields.update(_parley_settings(data["extensions"].get("parley")))
    return fields


def compose_persona(text: dict[str, str]) -> str:
    """The persona from the card's prompt fields, each under a heading. A single section
    stays bare, so that an exported persona (all in `description`) imports unchanged."""
    sections = [
        (heading, text[field].replace("{{original}}", "").strip())
        for field, heading in PERSONA_SECTIONS
    ]
    sections = [(heading, body) for heading, body in sections if body]
    if len(sections) == 1 and sections[0][0] != "Example dialogue":
        return sections[0][1]
    return "\n\n".join(f"## {heading}\n\n{body}" for heading, body in sections)


def slug_base(name: str) -> str:
    slug = slugify(name)[:SLUG_MAX].strip("-") or "character"
    return f"{slug}-card" if slug in RESERVED_SLUGS else slug


def _tagline(creator_notes: str, description: str) -> str:
    line = next((ln.strip() for ln in creator_notes.splitlines() if ln.strip()), "")
    if not line:
        first = next((ln.strip() for ln in description.splitlines() if ln.strip()), "")
        match = _FIRST_SENTENCE.match(first)
        line = match.group(1) if match else first
    if len(line) > TAGLINE_MAX:
        line = line[: TAGLINE_MAX - 1].rstrip() + "…"
    return line


def _parley_settings(parley: Any) -> dict[str, Any]:
    """Generation settings from our own `extensions.parley` (written by export)."""
    if parley is None:
        return {}
    if not isinstance(parley, dict):
        raise InvalidCard("`extensions.parley` must be an object.")
    out: dict[str, Any] = {}
    model = parley.get("model")
    if model is not None:
        if not isinstance(model, str) or len(model) > 100:
            raise InvalidCard("`extensions.parley.model` must be a string of at most 100.")
        out["model"] = _clean(model).strip()
    temperature = parley.get("temperature")
    if temperature is not None:
        if not _is_number(temperature) or not 0.0 <= temperature <= 1.0:
            raise InvalidCard("`extensions.parley.temperature` must be a number from 0 to 1.")
        out["temperature"] = float(temperature)
    for field, low, high in (("max_output_tokens", 1, 64000), ("context_budget", 256, 10**7)):
        value = parley.get(field)
        if value is None:
            continue
        if not _is_int(value) or not low <= value <= high:
            raise InvalidCard(f"`extensions.parley.{field}` must be an integer {low}..{high}.")
        out[field] = value
    return out


def _string_list(data: dict, field: str, *, limit: int, max_chars: int | None) -> list[str]:
    value = data.get(field)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise InvalidCard(f"`{field}` must be a list of strings.")
    items: list[str] = []
    for item in value:
        item = _clean(item).strip()
        if max_chars is not None:
            item = item[:max_chars].strip()
        if item and item not in items:
            items.append(item)
    return items[:limit]


def _clean(text: str) -> str:
    """Storable text: no NUL (PostgreSQL refuses it), no lone surrogates (UTF-8 does),
    Unix newlines."""
    text = text.encode("utf-8", "replace").decode("utf-8")
    return text.replace("\0", "").replace("\r\n", "\n")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return (_is_int(value) or isinstance(value, float)) and value == value  # not NaN


# --- Parley -> card


def character_to_card(character) -> dict:
    """A V2 card. The whole persona goes to `description` (what other frontends show and
    send), so import -> export -> import keeps persona, greetings, tags and tagline."""
    return {
        "spec": SPEC_V2,
        "spec_version": "2.0",
        "data": {
            "name": character.name,
            "description": character.persona,
            "personality": "",
            "scenario": "",
            "first_mes": character.greeting,
            "mes_example": "",
            "creator_notes": character.tagline,
            "system_prompt": "",
            "post_history_instructions": "",
            "alternate_greetings": list(character.alternate_greetings or []),
            "tags": list(character.tags or []),
            "creator": "",
            "character_version": "",
            "extensions": {
                "parley": {
                    "slug": character.slug,
                    "model": character.model,
                    "temperature": character.temperature,
                    "max_output_tokens": character.max_output_tokens,
                    "context_budget": character.context_budget,
                }
            },
        },
    }


# --- Images


def avatar_from_png(data: bytes) -> bytes:
    """The card's picture as a clean PNG for the avatar: downscaled, without the card's
    text chunks. Pillow raises many exception types on broken files; all are invalid."""
    pixels = _png_without_text(data)
    try:
        with _open_image(pixels) as image:
            width, height = image.size
            if image.format != "PNG" or width * height > IMAGE_MAX_PIXELS:
                raise InvalidCard("The PNG image is too large or not a PNG.")
            image.load()
            picture = image.convert("RGBA" if _has_alpha(image) else "RGB")
    except InvalidCard:
        raise
    except Exception:
        raise InvalidCard("The PNG image cannot be read.") from None
    picture.thumbnail((AVATAR_MAX_SIDE, AVATAR_MAX_SIDE))
    out = io.BytesIO()
    picture.save(out, "PNG")
    return out.getvalue()


def card_to_png(card: dict, avatar_bytes: bytes | None = None) -> bytes:
    """A PNG of the avatar (or a placeholder) with the card in a `chara` tEXt chunk."""
    picture = None
    if avatar_bytes:
        try:
            with _open_image(avatar_bytes) as image:
                if image.size[0] * image.size[1] <= IMAGE_MAX_PIXELS:
                    image.load()
                    picture = image.convert("RGBA" if _has_alpha(image) else "RGB")
        except Exception:
            picture = None  # a broken stored avatar still exports, with the placeholder
    if picture is None:
        picture = placeholder_image(str(card.get("data", {}).get("name", "") or "?"))
    encoded = json.dumps(card, ensure_ascii=False).encode("utf-8")
    info = PngImagePlugin.PngInfo()
    info.add_text("chara", base64.b64encode(encoded).decode("ascii"))
    out = io.BytesIO()
    picture.save(out, "PNG", pnginfo=info)
    return out.getvalue()


def placeholder_image(name: str) -> Image.Image:
    """A 400x600 portrait: a colour from the name and its initial."""
    digest = hashlib.sha256(name.encode("utf-8", "replace")).digest()
    background = (64 + digest[0] % 128, 64 + digest[1] % 128, 64 + digest[2] % 128)
    image = Image.new("RGB", (400, 600), background)
    draw = ImageDraw.Draw(image)
    initial = (name.strip()[:1] or "?").upper()
    try:
        font = ImageFont.load_default(size=220)
        draw.text((200, 300), initial, fill=(255, 255, 255), font=font, anchor="mm")
    except Exception:  # Pillow without FreeType: the small bitmap font, no anchors
        draw.text((195, 292), initial, fill=(255, 255, 255))
    return image


def _open_image(data: bytes) -> Image.Image:
    """Pillow's lazy open (header only), with its pixel-bomb warning as an error."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        return Image.open(io.BytesIO(data))


def _has_alpha(image: Image.Image) -> bool:
    return image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info
