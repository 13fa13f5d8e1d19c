"""Attachments: upload (validated by content), sending with a message, and who may
fetch them. An attachment belongs to its uploader until a message carries it (once,
and only the uploader's); from then on it is served to the members of that message's
conversation, and to nobody while the message is deleted.

The file goes through Django's storage API (`default_storage`: the file system unless
STORAGES says otherwise) under a random name.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

from django.conf import settings
from django.core.files.base import ContentFile, File
from django.core.files.uploadedfile import UploadedFile
from django.db.models import Exists, OuterRef, Q
from django.utils.text import get_valid_filename

from accounts.models import User
from chat import media
from chat.models import Attachment, Membership, Message
from chat.sniff import HEAD_BYTES, TEXT, Sniffed, is_plain_text, sniff
from config.errors import ApplicationError

logger = logging.getLogger(__name__)

KINDS = frozenset(Attachment.Kind.values)
ALLOWED = (
    "images (JPEG, PNG, GIF, WebP), audio (Ogg/Opus, WebM, MP4/M4A, MP3, WAV), "
    "video (MP4, WebM), PDF and plain text"
)


def max_upload_bytes() -> int:
    return max(settings.PARLEY_ATTACHMENT_MAX_BYTES.values())


def _too_large(kind: str) -> ApplicationError:
    limit = settings.PARLEY_ATTACHMENT_MAX_BYTES[kind]
    return ApplicationError(
        "too_large", f"A {kind} attachment may be at most {limit} bytes.", details={"limit": limit}
    )


# --- Upload


def attachment_upload(*, user: User, upload: UploadedFile, kind: str | None = None) -> Attachment:
    """Store an upload as the user's attachment. `kind` is only a hint for containers
    that hold sound or pictures (WebM, MP4) when ffprobe is missing; the content
    decides everything else. Nothing is stored unless every check passes."""
    if upload.size is None or upload.size > max_upload_bytes():
        raise ApplicationError("too_large", f"Uploads may be at most {max_upload_bytes()} bytes.")
    if upload.size == 0:
        raise ApplicationError("bad_request", "The file is empty.")
    upload.seek(0)
    head = upload.read(HEAD_BYTES)
    upload.seek(0)
    sniffed = sniff(head)
    if sniffed is None:
        if upload.size > settings.PARLEY_ATTACHMENT_MAX_BYTES["file"]:
            raise _too_large("file")  # before reading it all as text
        sniffed = TEXT if is_plain_text(upload.chunks()) else None
    if sniffed is None:
        raise ApplicationError("bad_request", f"Unsupported file type. Allowed: {ALLOWED}.")
    _refuse_disguise(declared=upload.content_type or "", sniffed=sniffed)
    attachment = Attachment(uploader=user, name=_clean_name(upload.name))
    with _local_path(upload) as path:
        content = _inspect(attachment, sniffed=sniffed, path=path, upload=upload, hint=kind)
        if content.size > settings.PARLEY_ATTACHMENT_MAX_BYTES[attachment.kind]:
            raise _too_large(attachment.kind)
        attachment.size = content.size
        attachment.file.save(f"upload{_extension(attachment, sniffed)}", content, save=False)
    try:
        attachment.save()
    except BaseException:
        attachment.file.delete(save=False)  # no orphan file for a row never written
        raise
    return attachment


def _refuse_disguise(*, declared: str, sniffed: Sniffed) -> None:
    """The declared type is never trusted, but one the content contradicts (an HTML
    page sent as `image/png`) marks a disguised file: refused."""
    family = declared.split("/", 1)[0].strip().lower()
    if family == "image" and "image" not in sniffed.kinds:
        raise ApplicationError("bad_request", "The file is not the image it claims to be.")
    if family in ("audio", "video") and not {"audio", "video"} & set(sniffed.kinds):
        raise ApplicationError("bad_request", f"The file is not the {family} it claims to be.")


def _inspect(
    attachment: Attachment, *, sniffed: Sniffed, path: Path, upload: UploadedFile, hint: str | None
) -> File:
    """Fill kind, content type and media fields; the content to store."""
    family = sniffed.kinds[0]
    if family == "image":
        if upload.size > settings.PARLEY_ATTACHMENT_MAX_BYTES["image"]:
            raise _too_large("image")  # before decoding it
        try:
            clean = media.image_clean(path, content_type=sniffed.content_type)
        except media.MediaError as exc:
            raise ApplicationError("bad_request", "The image cannot be read.") from exc
        attachment.kind, attachment.content_type = "image", sniffed.content_type
        attachment.width, attachment.height = clean.width, clean.height
        return ContentFile(clean.data)
    if family == "file":
        attachment.kind, attachment.content_type = "file", sniffed.content_type
        return File(upload)
    kind = _media_kind(attachment, sniffed=sniffed, path=path, upload=upload, hint=hint)
    if upload.size > settings.PARLEY_ATTACHMENT_MAX_BYTES[kind]:
        raise _too_large(kind)  # before decoding it for a waveform
    if kind == "audio":
        sniffed = sniffed.as_audio()
        wave = media.waveform(
            path, bars=settings.PARLEY_WAVEFORM_BARS, duration_hint=attachment.duration_s
        )
        if wave is not None:
            attachment.waveform = wave.peaks
            attachment.duration_s = attachment.duration_s or wave.duration_s
    attachment.kind, attachment.content_type = kind, sniffed.content_type
    return File(upload)


def _media_kind(
    attachment: Attachment, *, sniffed: Sniffed, path: Path, upload: UploadedFile, hint: str | None
) -> str:
    """ "audio" or "video": what the streams say (ffprobe), else the hint, else the
    likelier kind of the container. Nothing too large for every candidate is probed."""
    if upload.size > max(settings.PARLEY_ATTACHMENT_MAX_BYTES[k] for k in sniffed.kinds):
        raise _too_large(sniffed.kinds[0])
    try:
        probe = media.probe(path)
    except media.MediaError as exc:
        raise ApplicationError("bad_request", "The audio or video cannot be read.") from exc
    if probe is None:
        return hint if hint in sniffed.kinds else sniffed.kinds[0]
    if probe.kind not in sniffed.kinds:
        raise ApplicationError("bad_request", f"Unsupported file type. Allowed: {ALLOWED}.")
    attachment.duration_s = probe.duration_s
    if probe.kind == "video":
        attachment.width, attachment.height = probe.width, probe.height
    return probe.kind


def _extension(attachment: Attachment, sniffed: Sniffed) -> str:
    if attachment.kind == "audio" and sniffed.audio_extension:
        return sniffed.audio_extension
    return sniffed.extension


def _clean_name(name: str | None) -> str:
    """The last path part of the client's name, made safe to show and to send back in
    Content-Disposition; "" if nothing is left."""
    base = PurePosixPath((name or "").replace("\\", "/")).name
    try:
        return get_valid_filename(base)[:200]
    except Exception:  # SuspiciousFileOperation for "", "." or ".."
        return ""


@contextlib.contextmanager
def _local_path(upload: UploadedFile) -> Iterator[Path]:
    """A path on the local disk for Pillow and ffprobe: the upload's own temporary
    file, or a copy of an in-memory one."""
    if hasattr(upload, "temporary_file_path"):
        yield Path(upload.temporary_file_path())
        return
    with tempfile.NamedTemporaryFile(prefix="parley-upload-") as copy:
        for chunk in upload.chunks():
            copy.write(chunk)
        copy.flush()
        upload.seek(0)
        yield Path(copy.name)


# --- Sending (called by chat.services.message_post)


def attachment_for_send(
    *,
    user: User,
    attachment_id: int | str | None,
    kind: str,
    conversation_id: int,
    client_id: str,
) -> Attachment | None:
    """The attachment a `message:send` names, checked against its `kind`; None for a
    text message. An attachment already sent is refused, unless this send is a retry
    of the message that carries it (same conversation and client_id): then the insert
    meets the stored message and the send answers with it, as any retry does."""
    if attachment_id is None:
        if kind != Message.Kind.TEXT:
            raise ApplicationError("bad_request", f"A {kind} message needs an `attachment`.")
        return None
    if kind not in KINDS:
        raise ApplicationError(
            "bad_request", "A message with an attachment needs the attachment's `kind`."
        )
    pk = _parse_id(attachment_id)
    attachment = (
        Attachment.objects.select_related("message").filter(pk=pk, uploader=user).first()
        if pk is not None
        else None
    )
    if attachment is None:
        raise ApplicationError("bad_request", "No such attachment.")
    if attachment.message_id is not None:
        sent = attachment.message
        if sent.conversation_id == conversation_id and sent.client_id == client_id:
            return attachment
        raise ApplicationError("bad_request", "This attachment was already sent.")
    if attachment.kind != kind:
        raise ApplicationError(
            "bad_request", f"The attachment is {attachment.kind!r}, not {kind!r}: set `kind`."
        )
    return attachment


def attachment_claim(*, attachment: Attachment, message: Message) -> None:
    """Attach it to the new message, in the transaction that stores the message. One
    conditional UPDATE: of two sends racing with the same attachment, one wins and
    the other fails (its transaction, message and seq roll back)."""
    claimed = Attachment.objects.filter(
        pk=attachment.pk, uploader_id=message.sender_user_id, message__isnull=True
    ).update(message=message)
    if not claimed:
        raise ApplicationError("bad_request", "This attachment was already sent.")
    message.attachment = attachment  # caches both sides: message_out needs no query


def _parse_id(value: int | str) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        pk = value
    elif isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 19:
        pk = int(value)
    else:
        return None
    return pk if 1 <= pk <= 2**63 - 1 else None


# --- Reading


def attachment_get_visible(*, user: User, attachment_id: int) -> Attachment:
    """The attachment if the user may fetch it, else `not_found` (nothing is learnt
    about attachments of others): the uploader's own before it is sent; a member's of
    the conversation once sent, unless the message is deleted. One query."""
    member = Membership.objects.filter(
        conversation_id=OuterRef("message__conversation_id"), user_id=user.pk
    )
    attachment = (
        Attachment.objects.filter(pk=attachment_id)
        .filter(
            Q(message__isnull=True, uploader_id=user.pk)
            | (Q(message__isnull=False, message__deleted_at__isnull=True) & Q(Exists(member)))
        )
        .first()
    )
    if attachment is None:
        raise ApplicationError("not_found", "No such attachment.")
    return attachment
