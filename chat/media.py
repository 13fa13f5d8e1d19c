"""Looking inside uploads: images are decoded and re-encoded with Pillow (which drops
EXIF, GPS, XMP and comments, after applying the EXIF orientation to the pixels);
audio and video are probed with ffprobe and, for audio, decoded by ffmpeg to draw a
waveform. Without ffprobe/ffmpeg (Debian package `ffmpeg`) those fields stay empty.
"""

from __future__ import annotations

import io
import json
import logging
import shutil
import subprocess
import threading
from array import array
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from PIL import Image, ImageOps, ImageSequence

from config.errors import ApplicationError

logger = logging.getLogger(__name__)


class MediaError(Exception):
    """The content is not the valid media its first bytes promised."""


# --- Images


@dataclass(frozen=True)
class CleanImage:
    data: bytes
    width: int
    height: int


_PILLOW_FORMATS = {"image/jpeg": "JPEG", "image/png": "PNG", "image/gif": "GIF"}
_PILLOW_FORMATS["image/webp"] = "WEBP"
# Pillow's `info` keys that are pixels' business, not metadata: kept on re-encoding.
_KEEP_INFO = ("transparency", "background", "duration", "loop")


def image_clean(path: Path, *, content_type: str) -> CleanImage:
    """The image re-encoded in its own format without metadata, upright."""
    expected = _PILLOW_FORMATS[content_type]
    try:
        with Image.open(path, formats=[expected]) as image:
            width, height = image.size
            frames = getattr(image, "n_frames", 1)
            if width * height * frames > settings.PARLEY_IMAGE_MAX_PIXELS:
                raise ApplicationError(
                    "too_large",
                    f"Images may have at most {settings.PARLEY_IMAGE_MAX_PIXELS} pixels.",
                )
            return _reencode(image, expected, animated=frames > 1)
    except ApplicationError:
        raise
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as exc:
        # UnidentifiedImageError is an OSError: wrong or broken content.
        raise MediaError(str(exc) or type(exc).__name__) from exc


def _reencode(image: Image.Image, fmt: str, *, animated: bool) -> CleanImage:
    icc = image.info.get("icc_profile")  # colours, not metadata about the person
    keep = {k: image.info[k] for k in _KEEP_INFO if k in image.info}
    out = io.BytesIO()
    params: dict = {"icc_profile": icc} if icc and fmt != "GIF" else {}
    if fmt in ("JPEG", "WEBP"):
        params["quality"] = 90
    if animated:
        frames = []
        for frame in ImageSequence.Iterator(image):
            copy = frame.copy()
            copy.info = {k: frame.info[k] for k in _KEEP_INFO if k in frame.info}
            frames.append(copy)
        first = frames[0]
        first.save(
            out,
            fmt,
            save_all=True,
            append_images=frames[1:],
            duration=[f.info.get("duration", 100) for f in frames],
            loop=keep.get("loop", 0),
            **params,
        )
    else:
        image.load()
        upright = ImageOps.exif_transpose(image)  # a copy, orientation applied
        upright.info = keep
        upright.save(out, fmt, **params)
        first = upright
    return CleanImage(data=out.getvalue(), width=first.width, height=first.height)


# --- Audio and video


def tool(name: str) -> str | None:
    """The path of ffprobe/ffmpeg, or None when not installed."""
    return shutil.which(name)


@dataclass(frozen=True)
class Probe:
    kind: str  # "audio" or "video"
    duration_s: float | None
    width: int | None
    height: int | None


def probe(path: Path) -> Probe | None:
    """What ffprobe sees in the file; None without ffprobe. MediaError when the file
    has no audio or video stream ffprobe can read."""
    ffprobe = tool(settings.PARLEY_FFPROBE)
    if ffprobe is None:
        return None
    command = [ffprobe, "-v", "error", "-print_format", "json", "-show_format", "-show_streams"]
    result = _run([*command, str(path)])
    if result.returncode != 0:
        raise MediaError(result.stderr.decode(errors="replace")[:200] or "unreadable")
    try:
        info = json.loads(result.stdout)
    except ValueError as exc:
        raise MediaError("ffprobe gave no answer") from exc
    streams = info.get("streams") or []
    # Cover art in MP3/M4A is a video stream flagged `attached_pic`: not a video.
    videos = [
        s
        for s in streams
        if s.get("codec_type") == "video" and not (s.get("disposition") or {}).get("attached_pic")
    ]
    audios = [s for s in streams if s.get("codec_type") == "audio"]
    if not videos and not audios:
        raise MediaError("no audio or video stream")
    width = height = None
    if videos:
        width, height = _positive(videos[0].get("width")), _positive(videos[0].get("height"))
        if width and height and _rotation(videos[0]) in (90, 270):
            width, height = height, width
    return Probe(
        kind="video" if videos else "audio",
        duration_s=_duration((info.get("format") or {}).get("duration")),
        width=width,
        height=height,
    )


def _rotation(stream: dict) -> int:
    for side in stream.get("side_data_list") or []:
        if "rotation" in side:
            return abs(int(side["rotation"])) % 360
    rotate = (stream.get("tags") or {}).get("rotate")
    return abs(int(rotate)) % 360 if str(rotate or "").lstrip("-").isdigit() else 0


def _positive(value) -> int | None:
    return value if isinstance(value, int) and value > 0 else None


def _duration(value) -> float | None:
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        return None  # "N/A": e.g. WebM from a browser's MediaRecorder has none
    return round(seconds, 3) if seconds > 0 else None


WAVEFORM_RATE = 4000  # Hz: plenty for a drawing, and little to decode


@dataclass(frozen=True)
class Waveform:
    peaks: list[float]
    duration_s: float


def waveform(path: Path, *, bars: int, duration_hint: float | None) -> Waveform | None:
    """`bars` peak levels in 0..1 (the loudest bar is 1), from the first audio stream
    decoded to mono; None without ffmpeg or without sound. Streams ffmpeg's output:
    memory stays small for long recordings."""
    ffmpeg = tool(settings.PARLEY_FFMPEG)
    if ffmpeg is None:
        return None
    command = [ffmpeg, "-v", "error", "-nostdin", "-i", str(path), "-map", "0:a:0"]
    command += ["-ac", "1", "-ar", str(WAVEFORM_RATE), "-f", "s16le", "-acodec", "pcm_s16le", "-"]
    expected = int((duration_hint or 60) * WAVEFORM_RATE)
    block = max(1, expected // (bars * 8))  # samples per block peak: 8 blocks a bar or more
    blocks: list[int] = []
    samples = 0
    carry = b""
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL
    )
    # A deadline for the whole decode: a stuck or endless stream is killed, not waited on.
    watchdog = threading.Timer(settings.PARLEY_MEDIA_TIMEOUT_S, process.kill)
    watchdog.start()
    try:
        pending = array("h")
        while chunk := process.stdout.read(1 << 16):
            chunk = carry + chunk
            cut = len(chunk) - len(chunk) % 2
            carry = chunk[cut:]
            pending.frombytes(chunk[:cut])
            full = len(pending) - len(pending) % block
            for i in range(0, full, block):
                part = pending[i : i + block]
                blocks.append(max(max(part), -min(part)))
            samples += full
            del pending[:full]
        if pending:
            blocks.append(max(max(pending), -min(pending)))
            samples += len(pending)
        process.wait()
    finally:
        watchdog.cancel()
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stdout.close()
    if process.returncode != 0 or not blocks:
        if process.returncode != 0:
            logger.warning("No waveform for %s: ffmpeg exited %s", path.name, process.returncode)
        return None
    loudest = max(blocks) or 1
    n = len(blocks)
    peaks = []
    for bar in range(bars):
        lo = bar * n // bars
        hi = max(lo + 1, (bar + 1) * n // bars)
        peaks.append(round(max(blocks[lo:hi]) / loudest, 3))
    return Waveform(peaks=peaks, duration_s=round(samples / WAVEFORM_RATE, 3))


def _run(command: list[str]) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(
            command,
            capture_output=True,
            stdin=subprocess.DEVNULL,
            timeout=settings.PARLEY_MEDIA_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise MediaError("took too long to read") from exc
