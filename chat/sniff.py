"""What an uploaded file really is, from its first bytes (its "magic"), never from its
name or the type the client declared. Only an allow-list is recognised:

- image: JPEG, PNG, GIF, WebP
- audio: Ogg (Opus or Vorbis), WebM, MP4/M4A, MP3, WAV
- video: MP4, WebM
- file: PDF, and plain UTF-8 text that is not markup (no HTML, SVG or XML, which a
  browser could run)

WebM and MP4 may hold sound only or pictures too: they are sniffed as both, and
ffprobe's list of streams decides (chat/media.py).
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Iterable
from dataclasses import dataclass

HEAD_BYTES = 4096  # enough for every signature below


@dataclass(frozen=True)
class Sniffed:
    kinds: tuple[str, ...]  # what it may be, the likelier first
    content_type: str
    extension: str
    audio_content_type: str = ""  # for a container that turns out to hold sound only
    audio_extension: str = ""

    def as_audio(self) -> Sniffed:
        if not self.audio_content_type:
            return self
        return Sniffed(("audio",), self.audio_content_type, self.audio_extension)


JPEG = Sniffed(("image",), "image/jpeg", ".jpg")
PNG = Sniffed(("image",), "image/png", ".png")
GIF = Sniffed(("image",), "image/gif", ".gif")
WEBP = Sniffed(("image",), "image/webp", ".webp")
WAV = Sniffed(("audio",), "audio/wav", ".wav")
OGG = Sniffed(("audio",), "audio/ogg", ".ogg")
MP3 = Sniffed(("audio",), "audio/mpeg", ".mp3")
M4A = Sniffed(("audio",), "audio/mp4", ".m4a")
MP4 = Sniffed(("video", "audio"), "video/mp4", ".mp4", "audio/mp4", ".m4a")
WEBM = Sniffed(("video", "audio"), "video/webm", ".webm", "audio/webm", ".webm")
PDF = Sniffed(("file",), "application/pdf", ".pdf")
TEXT = Sniffed(("file",), "text/plain", ".txt")

# ISO base media brands of MP4 audio and video (not HEIF/AVIF images, nor QuickTime).
_MP4_AUDIO_BRANDS = {b"M4A ", b"M4B "}
_MP4_BRANDS = {
    b"isom", b"iso2", b"iso3", b"iso4", b"iso5", b"iso6", b"mp41", b"mp42", b"avc1",
    b"M4V ", b"M4VH", b"M4VP", b"dash", b"MSNV", b"f4v ", b"3gp4", b"3gp5", b"3gp6", b"mmp4",
}  # fmt: skip


def sniff(head: bytes) -> Sniffed | None:
    """The binary type `head` (the file's first bytes) starts with, or None."""
    if head.startswith(b"\xff\xd8\xff"):
        return JPEG
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return PNG
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return GIF
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return WEBP
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return WAV
    if head[:4] == b"OggS":
        # The first page names the codec: Opus or Vorbis sound, not Theora video.
        return OGG if (b"OpusHead" in head[:80] or b"\x01vorbis" in head[:80]) else None
    if head[:4] == b"\x1a\x45\xdf\xa3":
        # EBML: WebM names itself in its DocType; other Matroska files are refused.
        return WEBM if b"\x42\x82" in head[:64] and b"webm" in head[:64] else None
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in _MP4_AUDIO_BRANDS:
            return M4A
        return MP4 if brand in _MP4_BRANDS else None
    if head.startswith(b"ID3") or _mp3_frame(head):
        return MP3
    if head.startswith(b"%PDF-"):
        return PDF
    return None


def _mp3_frame(head: bytes) -> bool:
    """An MPEG audio layer III frame header: 11 sync bits, a known version, layer III,
    and a bitrate and sample rate that are not the reserved values."""
    if len(head) < 4 or head[0] != 0xFF or head[1] & 0xE0 != 0xE0:
        return False
    version, layer = (head[1] >> 3) & 0b11, (head[1] >> 1) & 0b11
    bitrate, rate = head[2] >> 4, (head[2] >> 2) & 0b11
    return version != 0b01 and layer == 0b01 and bitrate not in (0, 0xF) and rate != 0b11


# Markup a browser would render or run, at the start of a "text" file.
_MARKUP = re.compile(
    r"<\s*(!doctype|html|head|body|script|svg|iframe|object|embed|meta|\?xml|style|a\s|img)",
    re.IGNORECASE,
)
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f]")


def is_plain_text(chunks: Iterable[bytes]) -> bool:
    """UTF-8 text (a BOM allowed) without NUL or other control characters, that does
    not start like markup. Reads every chunk: a binary tail is caught too."""
    decoder = codecs.getincrementaldecoder("utf-8-sig")()
    start = ""
    try:
        for chunk in chunks:
            text = decoder.decode(chunk)
            if _CONTROL.search(text):
                return False
            if len(start) < 1024:
                start += text[: 1024 - len(start)]
        text = decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return False
    if _CONTROL.search(text):
        return False
    start = start.lstrip()
    return bool(start) and not start.startswith("<") and not _MARKUP.search(start)
