"""Attachments over REST and the websocket, on real PostgreSQL, Redis, Pillow and
ffmpeg: content sniffing (disguised files refused), size limits, metadata stripping,
duration and waveform, who may fetch a file, and sending one exactly once."""

from __future__ import annotations

import io
import math
import shutil
import struct
import subprocess
import uuid
import wave
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from channels.db import database_sync_to_async
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from PIL import Image, PngImagePlugin

from chat import services
from chat.models import Attachment, Message
from config.errors import ApplicationError
from tests.conftest import WS_TIMEOUT, ws_session
from tests.test_rest import assert_error, make_group, messages_url

pytestmark = pytest.mark.django_db

UPLOAD = "/api/attachments/"
FFMPEG = shutil.which("ffmpeg")


def file_url(attachment_id: int) -> str:
    return f"/api/attachments/{attachment_id}/file/"


@pytest.fixture(autouse=True)
def _media_root(settings, tmp_path):
    """Uploads go to a directory of the test's own, checked for leftovers."""
    settings.MEDIA_ROOT = tmp_path / "media"
    return settings.MEDIA_ROOT


def stored_files(media_root: Path) -> list[Path]:
    return [p for p in media_root.rglob("*") if p.is_file()] if media_root.exists() else []


@pytest.fixture
def alice(make_user):
    return make_user("alice")


@pytest.fixture
def bob(make_user):
    return make_user("bob")


@pytest.fixture
def api(api_client_for, alice):
    return api_client_for(alice)


@pytest.fixture
def team(alice, bob):
    return make_group(alice, bob)


def upload(client, data: bytes, name: str, content_type: str, **fields):
    file = SimpleUploadedFile(name, data, content_type=content_type)
    return client.post(UPLOAD, {"file": file, **fields}, format="multipart")


def uploaded(client, data: bytes, name: str, content_type: str, **fields) -> dict:
    response = upload(client, data, name, content_type, **fields)
    assert response.status_code == 201, response.content
    return response.json()


def fetch(client, attachment_id: int) -> bytes:
    response = client.get(file_url(attachment_id))
    assert response.status_code == 200, getattr(response, "content", response)
    return b"".join(response.streaming_content)


# --- Files made for the tests


def image_bytes(fmt: str, size=(64, 32), **params) -> bytes:
    image = Image.new("RGBA" if fmt in ("PNG", "WEBP") else "RGB", size, (200, 30, 30))
    image.paste((0, 0, 255), (0, 0, 10, 10))  # marks the top-left corner
    out = io.BytesIO()
    image.save(out, fmt, **params)
    return out.getvalue()


def exif_with_gps() -> Image.Exif:
    exif = Image.Exif()
    exif[0x010F] = "SecretCameraMaker"  # Make
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to view
    exif[0x8825] = {  # GPSInfo
        1: "N",
        2: (52.0, 22.0, 12.0),
        3: "E",
        4: (4.0, 53.0, 28.0),
    }
    return exif


def wav_bytes(seconds: float = 1.0, rate: int = 8000) -> bytes:
    """Mono 16-bit PCM: silent first half, then a 440 Hz tone at full scale."""
    frames = bytearray()
    total = int(seconds * rate)
    for i in range(total):
        level = 0 if i < total // 2 else 32000
        frames += struct.pack("<h", int(level * math.sin(2 * math.pi * 440 * i / rate)))
    out = io.BytesIO()
    with wave.open(out, "wb") as file:
        file.setnchannels(1)
        file.setsampwidth(2)
        file.setframerate(rate)
        file.writeframes(bytes(frames))
    return out.getvalue()


def need_ffmpeg() -> str:
    assert FFMPEG, "ffmpeg is required (Debian package `ffmpeg`; .ci/run installs it)"
    return FFMPEG


def ffmpeg_make(tmp_path: Path, name: str, *args: str) -> bytes:
    """A 1-second file made by ffmpeg from its test sources (a 440 Hz tone, a test
    picture 160x90)."""
    out = tmp_path / name
    command = [need_ffmpeg(), "-v", "error", "-y", *args, str(out)]
    subprocess.run(command, check=True, timeout=60)
    return out.read_bytes()


TONE = ["-f", "lavfi", "-i", "sine=frequency=440:duration=1"]
PICTURE = ["-f", "lavfi", "-i", "testsrc=size=160x90:rate=10:duration=1"]


# --- Images


def test_jpeg_exif_and_gps_are_stripped_with_the_orientation_applied(api):
    data = image_bytes("JPEG", exif=exif_with_gps().tobytes())
    assert Image.open(io.BytesIO(data)).getexif().get_ifd(0x8825)  # the test file has GPS
    body = uploaded(api, data, "holiday.jpg", "image/jpeg")
    assert body["kind"] == "image" and body["content_type"] == "image/jpeg"
    # Orientation 6 turned the 64x32 picture upright: 32x64.
    assert (body["width"], body["height"]) == (32, 64)
    stored = fetch(api, body["id"])
    assert body["size"] == len(stored)
    assert b"SecretCameraMaker" not in stored and b"Exif" not in stored
    image = Image.open(io.BytesIO(stored))
    assert image.format == "JPEG" and image.size == (32, 64)
    assert not image.getexif() and not image.getexif().get_ifd(0x8825)
    # The blue top-left pixel moved to the top-right corner: rotated, not just relabelled.
    rgb = image.convert("RGB")
    assert rgb.getpixel((28, 3))[2] > 150 and rgb.getpixel((3, 3))[2] < 100


def test_png_text_chunks_and_exif_are_stripped(api):
    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", "my home address")
    data = image_bytes("PNG", pnginfo=info, exif=exif_with_gps().tobytes())
    assert b"my home address" in data
    body = uploaded(api, data, "x.png", "image/png")
    stored = fetch(api, body["id"])
    assert b"my home address" not in stored and b"SecretCameraMaker" not in stored
    image = Image.open(io.BytesIO(stored))
    assert image.format == "PNG" and "Comment" not in image.info and not image.getexif()
    assert image.mode == "RGBA"  # transparency kept


@pytest.mark.parametrize(
    ("fmt", "content_type"),
    [("PNG", "image/png"), ("GIF", "image/gif"), ("WEBP", "image/webp"), ("JPEG", "image/jpeg")],
)
def test_images_are_recognised_whatever_their_name_or_declared_type(api, fmt, content_type):
    # A name and a declared type that say nothing: the content decides.
    body = uploaded(api, image_bytes(fmt), "upload.bin", "application/octet-stream")
    assert body["kind"] == "image" and body["content_type"] == content_type
    assert (body["width"], body["height"]) == (64, 32)
    assert body["duration_s"] is None and body["waveform"] is None
    assert Image.open(io.BytesIO(fetch(api, body["id"]))).format == fmt


def test_animated_gif_keeps_its_frames_and_drops_its_comment(api):
    frames = [Image.new("RGB", (20, 10), color) for color in ("red", "green", "blue")]
    out = io.BytesIO()
    frames[0].save(
        out, "GIF", save_all=True, append_images=frames[1:], duration=100, comment=b"secret"
    )
    assert Image.open(out).n_frames == 3
    body = uploaded(api, out.getvalue(), "a.gif", "image/gif")
    stored = fetch(api, body["id"])
    assert b"secret" not in stored
    assert Image.open(io.BytesIO(stored)).n_frames == 3


def test_an_image_of_too_many_pixels_is_refused_before_decoding(api, settings, _media_root):
    settings.PARLEY_IMAGE_MAX_PIXELS = 1000
    assert_error(upload(api, image_bytes("PNG"), "big.png", "image/png"), 413, "too_large")
    assert not Attachment.objects.exists() and not stored_files(_media_root)


# --- Audio and video


def test_wav_gets_duration_and_a_64_peak_waveform(api):
    body = uploaded(api, wav_bytes(), "note.wav", "audio/wav")
    assert body["kind"] == "audio" and body["content_type"] == "audio/wav"
    assert body["duration_s"] == pytest.approx(1.0, abs=0.05)
    peaks = body["waveform"]
    assert len(peaks) == 64 and all(0 <= p <= 1 for p in peaks)
    # Silent first half, loud second half (peaks are relative to the loudest bar).
    assert max(peaks[:28]) < 0.05
    assert min(peaks[36:]) > 0.8 and max(peaks) == 1
    assert body["width"] is None and body["height"] is None


@pytest.mark.parametrize(
    ("name", "args", "content_type"),
    [
        ("a.ogg", ["-c:a", "libopus"], "audio/ogg"),
        ("a.mp3", ["-c:a", "libmp3lame"], "audio/mpeg"),
        ("a.m4a", ["-c:a", "aac"], "audio/mp4"),
        ("a.webm", ["-c:a", "libopus"], "audio/webm"),
        ("a.mp4", ["-c:a", "aac"], "audio/mp4"),  # an MP4 holding sound only is audio
    ],
)
def test_audio_formats_get_duration_and_waveform(api, tmp_path, name, args, content_type):
    data = ffmpeg_make(tmp_path, name, *TONE, *args)
    body = uploaded(api, data, "voice-note", "application/octet-stream")
    assert body["kind"] == "audio" and body["content_type"] == content_type
    assert body["duration_s"] == pytest.approx(1.0, abs=0.1)
    assert len(body["waveform"]) == 64 and max(body["waveform"]) == 1


@pytest.mark.parametrize(
    ("name", "args", "content_type"),
    [
        ("v.mp4", ["-c:v", "libx264", "-pix_fmt", "yuv420p"], "video/mp4"),
        ("v.webm", ["-c:v", "libvpx", "-b:v", "200k"], "video/webm"),
    ],
)
def test_video_gets_size_and_duration(api, tmp_path, name, args, content_type):
    data = ffmpeg_make(tmp_path, name, *PICTURE, *args)
    body = uploaded(api, data, name, "video/whatever")
    assert body["kind"] == "video" and body["content_type"] == content_type
    assert (body["width"], body["height"]) == (160, 90)
    assert body["duration_s"] == pytest.approx(1.0, abs=0.15)
    assert body["waveform"] is None


def test_without_ffmpeg_uploads_work_minus_duration_and_waveform(api, settings, tmp_path):
    webm = ffmpeg_make(tmp_path, "a.webm", *TONE, "-c:a", "libopus")
    settings.PARLEY_FFPROBE = settings.PARLEY_FFMPEG = str(tmp_path / "no-such-tool")
    wav = uploaded(api, wav_bytes(), "note.wav", "audio/wav")
    assert wav["kind"] == "audio" and wav["duration_s"] is None and wav["waveform"] is None
    # WebM may be sound or pictures: without ffprobe, the client's hint decides ...
    hinted = uploaded(api, webm, "note.webm", "audio/webm", kind="audio")
    assert hinted["kind"] == "audio" and hinted["content_type"] == "audio/webm"
    # ... and without a hint it is taken as video.
    assert uploaded(api, webm, "note.webm", "audio/webm")["kind"] == "video"


# --- Documents


def test_pdf_and_plain_text_are_files_downloaded_under_their_name(api):
    pdf = uploaded(api, b"%PDF-1.4\n1 0 obj <<>> endobj\n%%EOF\n", "Contract 2026.pdf", "x/y")
    assert pdf["kind"] == "file" and pdf["content_type"] == "application/pdf"
    assert pdf["name"] == "Contract_2026.pdf"
    text = "Shopping list:\n- milk\n- שלום 👩‍💻\n".encode()
    note = uploaded(api, text, "../../etc/notes.txt", "text/plain")
    assert note["kind"] == "file" and note["content_type"] == "text/plain"
    assert note["name"] == "notes.txt"  # no path survives
    response = api.get(file_url(note["id"]))
    assert response["Content-Type"] == "text/plain; charset=utf-8"
    assert response["Content-Disposition"].startswith("attachment;")
    assert 'filename="notes.txt"' in response["Content-Disposition"]
    assert b"".join(response.streaming_content) == text


# --- Bad uploads: 4xx with a JSON body, nothing stored

HTML = b"<!DOCTYPE html><html><body><script>alert(document.cookie)</script></body></html>"
DISGUISED = {
    "html-as-png": (HTML, "cat.png", "image/png"),
    "html-as-text": (HTML, "notes.txt", "text/plain"),
    "html-with-bom": (b"\xef\xbb\xbf  \n<html><script>x()</script>", "a.txt", "text/plain"),
    "svg": (b'<svg xmlns="http://www.w3.org/2000/svg" onload="x()"/>', "a.svg", "image/svg+xml"),
    "xml": (b'<?xml version="1.0"?><a/>', "a.xml", "text/xml"),
    "text-as-png": (b"just some words", "a.png", "image/png"),
    "text-as-audio": (b"just some words", "a.mp3", "audio/mpeg"),
    "pdf-as-image": (b"%PDF-1.4\n%%EOF\n", "a.jpg", "image/jpeg"),
    "windows-exe": (b"MZ\x90\x00" + bytes(200), "a.exe", "application/octet-stream"),
    "zip": (b"PK\x03\x04" + bytes(100), "a.zip", "application/zip"),
    "binary": (bytes(range(256)) * 4, "a.bin", "application/octet-stream"),
    "nul-in-text": (b"hello\x00world", "a.txt", "text/plain"),
    "latin-1-text": ("café".encode("latin-1"), "a.txt", "text/plain"),
    "broken-png": (b"\x89PNG\r\n\x1a\n" + b"\x00" * 100, "a.png", "image/png"),
    "broken-jpeg": (b"\xff\xd8\xff\xe0" + b"garbage" * 50, "a.jpg", "image/jpeg"),
    "broken-wav": (b"RIFF\x24\x00\x00\x00WAVEfmt " + b"\x00" * 40, "a.wav", "audio/wav"),
    "broken-mp4": (b"\x00\x00\x00\x18ftypisom" + bytes(500), "a.mp4", "video/mp4"),
    "heic": (b"\x00\x00\x00\x18ftypheic" + bytes(100), "a.heic", "image/heic"),
    "matroska": (b"\x1a\x45\xdf\xa3\x42\x82\x88matroska" + bytes(100), "a.mkv", "video/x-mkv"),
    "empty": (b"", "a.txt", "text/plain"),
    "whitespace": (b"  \n\t ", "a.txt", "text/plain"),
}


@pytest.mark.parametrize("case", list(DISGUISED))
def test_disguised_or_unsupported_uploads_are_400_and_store_nothing(api, _media_root, case):
    data, name, content_type = DISGUISED[case]
    assert_error(upload(api, data, name, content_type), 400, "bad_request")
    assert not Attachment.objects.exists()
    assert not stored_files(_media_root)


@pytest.mark.parametrize(
    ("kind", "data", "name"),
    [
        ("image", image_bytes("PNG"), "a.png"),
        ("audio", wav_bytes(), "a.wav"),
        ("file", b"%PDF-1.4\n" + b"x" * 5000, "a.pdf"),
    ],
)
def test_uploads_over_their_kind_limit_are_413(api, settings, _media_root, kind, data, name):
    settings.PARLEY_ATTACHMENT_MAX_BYTES = {
        **settings.PARLEY_ATTACHMENT_MAX_BYTES,
        kind: len(data) - 1,
    }
    body = assert_error(upload(api, data, name, "application/octet-stream"), 413, "too_large")
    assert body["limit"] == len(data) - 1
    assert not Attachment.objects.exists() and not stored_files(_media_root)


def test_a_body_over_the_largest_limit_is_413_before_parsing(api, settings, _media_root):
    settings.PARLEY_ATTACHMENT_MAX_BYTES = dict.fromkeys(("image", "audio", "video", "file"), 10)
    data = b"%PDF-1.4\n" + b"x" * (100 * 1024)
    assert_error(upload(api, data, "a.pdf", "application/pdf"), 413, "too_large")
    assert not Attachment.objects.exists() and not stored_files(_media_root)


@pytest.mark.parametrize(
    ("body", "content_type", "status"),
    [
        ('{"file": "abc"}', "application/json", 415),
        ("file=abc", "application/x-www-form-urlencoded", 415),
    ],
)
def test_upload_that_is_not_multipart_is_refused(api, body, content_type, status):
    assert_error(api.post(UPLOAD, body, content_type=content_type), status)
    assert not Attachment.objects.exists()


def test_upload_without_a_file_or_with_a_bad_kind_is_400(api):
    assert_error(api.post(UPLOAD, {"kind": "audio"}, format="multipart"), 400, "bad_request")
    response = upload(api, wav_bytes(), "a.wav", "audio/wav", kind="sticker")
    body = assert_error(response, 400, "bad_request")
    assert "kind" in body["fields"]
    assert not Attachment.objects.exists()


def test_upload_needs_credentials(api_client_for):
    response = upload(api_client_for(), wav_bytes(), "a.wav", "audio/wav")
    assert_error(response, 401)
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert not Attachment.objects.exists()


# --- Who may fetch a file


def test_before_sending_only_the_uploader_can_fetch_it(api, api_client_for, bob):
    body = uploaded(api, image_bytes("PNG"), "a.png", "image/png")
    assert body["url"] == file_url(body["id"])
    response = api.get(body["url"])
    assert response.status_code == 200
    assert response["Content-Type"] == "image/png"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert "sandbox" in response["Content-Security-Policy"]
    assert response["Content-Disposition"].startswith("inline")
    assert_error(api_client_for(bob).get(body["url"]), 404, "not_found")
    assert_error(api_client_for().get(body["url"]), 401)
    assert_error(api.get(file_url(10**12)), 404, "not_found")


def test_once_sent_members_can_fetch_it_and_nobody_else(api, api_client_for, bob, make_user, team):
    body = uploaded(api, image_bytes("PNG"), "a.png", "image/png")
    sent = api.post(
        messages_url(team.pk),
        {"client_id": "p1", "kind": "image", "attachment": body["id"]},
        format="json",
    )
    assert sent.status_code == 201, sent.content
    assert fetch(api_client_for(bob), body["id"])  # a member
    assert fetch(api, body["id"])  # the uploader, a member
    outsider = api_client_for(make_user())
    assert_error(outsider.get(file_url(body["id"])), 404, "not_found")
    # A deleted message takes its attachment with it, for everyone.
    Message.objects.filter(pk=sent.json()["id"]).update(deleted_at=timezone.now())
    assert_error(api_client_for(bob).get(file_url(body["id"])), 404, "not_found")
    page = api.get(messages_url(team.pk)).json()["results"]
    assert page[-1]["deleted"] is True and page[-1]["attachment"] is None


# --- Sending


def test_rest_send_with_an_attachment_fills_the_message_object(api, api_client_for, bob, team):
    body = uploaded(api, wav_bytes(), "note.wav", "audio/wav")
    sent = api.post(
        messages_url(team.pk),
        {"client_id": "v1", "kind": "audio", "attachment": str(body["id"])},
        format="json",
    )
    assert sent.status_code == 201, sent.content
    message = sent.json()
    assert message["kind"] == "audio" and message["text"] == ""  # a caption is optional
    assert message["attachment"] == body
    history = api_client_for(bob).get(messages_url(team.pk)).json()["results"]
    assert history[-1]["attachment"] == body
    listing = api_client_for(bob).get("/api/conversations/").json()
    assert listing[0]["last_message"]["attachment"] == body
    # A retry (same client_id) answers with the same message.
    retry = api.post(
        messages_url(team.pk),
        {"client_id": "v1", "kind": "audio", "attachment": body["id"]},
        format="json",
    )
    assert retry.status_code == 200, retry.content
    assert retry.json() == message
    assert Message.objects.count() == 1


def test_a_caption_travels_with_the_attachment(api, team):
    body = uploaded(api, image_bytes("JPEG"), "a.jpg", "image/jpeg")
    sent = api.post(
        messages_url(team.pk),
        {"client_id": "c", "kind": "image", "attachment": body["id"], "text": "**look**"},
        format="json",
    )
    assert sent.status_code == 201, sent.content
    assert sent.json()["text"] == "**look**" and "<strong>look</strong>" in sent.json()["html"]


@pytest.mark.parametrize(
    "payload",
    [
        {"kind": "audio"},  # an image sent as audio
        {"kind": "text"},  # an attachment on a text message
        {"kind": "image", "attachment": None},  # an image message without one
        {"kind": "image", "attachment": 10**12},  # unknown
        {"kind": "image", "attachment": "abc"},  # not an id
        {"kind": "image", "attachment": "-1"},
        {"kind": "image", "attachment": "99999999999999999999999"},
        {"kind": "image", "text": "x" * 4001},
        {"kind": "image", "text": "nul\x00"},
    ],
)
def test_bad_attachment_sends_are_400_and_store_nothing(api, team, payload):
    body = uploaded(api, image_bytes("PNG"), "a.png", "image/png")
    payload = {"client_id": "c1", "attachment": body["id"], **payload}
    assert_error(api.post(messages_url(team.pk), payload, format="json"), 400, "bad_request")
    team.refresh_from_db()
    assert Message.objects.count() == 0 and team.last_seq == 0
    assert Attachment.objects.get().message_id is None


def test_only_the_uploader_can_send_it(api, api_client_for, bob, team):
    body = uploaded(api, image_bytes("PNG"), "a.png", "image/png")
    response = api_client_for(bob).post(
        messages_url(team.pk),
        {"client_id": "b1", "kind": "image", "attachment": body["id"]},
        format="json",
    )
    body_ = assert_error(response, 400, "bad_request")
    assert body_["message"] == "No such attachment."
    assert Message.objects.count() == 0 and Attachment.objects.get().message_id is None


def test_an_attachment_is_sent_once_only(api, alice, bob, team):
    other = make_group(alice, bob, title="Other")
    body = uploaded(api, image_bytes("PNG"), "a.png", "image/png")
    first = {"client_id": "c1", "kind": "image", "attachment": body["id"]}
    assert api.post(messages_url(team.pk), first, format="json").status_code == 201
    for conversation, client_id in ((team, "c2"), (other, "c1"), (other, "c3")):
        again = {**first, "client_id": client_id}
        response = api.post(messages_url(conversation.pk), again, format="json")
        assert_error(response, 400, "bad_request")
    assert Message.objects.count() == 1
    assert Attachment.objects.get().message.client_id == "c1"


def test_a_non_member_cannot_send_their_attachment_into_a_conversation(
    api_client_for, make_user, team
):
    outsider = make_user()
    client = api_client_for(outsider)
    body = uploaded(client, image_bytes("PNG"), "a.png", "image/png")
    response = client.post(
        messages_url(team.pk),
        {"client_id": "c1", "kind": "image", "attachment": body["id"]},
        format="json",
    )
    assert_error(response, 404, "not_found")
    assert Message.objects.count() == 0 and Attachment.objects.get().message_id is None


@pytest.mark.django_db(transaction=True)
def test_two_racing_sends_of_one_attachment_store_one_message(alice, bob):
    team = make_group(alice, bob)
    # The service itself, from four threads with a database connection each.
    attachment = Attachment.objects.create(
        uploader=alice, kind="image", content_type="image/png", size=1, file="x.png"
    )

    def send(client_id: str):
        try:
            return services.message_post(
                user=alice,
                conversation_id=team.pk,
                client_id=client_id,
                kind="image",
                attachment_id=attachment.pk,
            )
        except ApplicationError as error:
            return error
        finally:
            connection.close()

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(send, [f"race-{i}" for i in range(4)]))
    sent = [r for r in results if isinstance(r, services.PostResult)]
    failed = [r for r in results if isinstance(r, ApplicationError)]
    assert len(sent) == 1 and len(failed) == 3, results
    assert {e.code for e in failed} == {"bad_request"}
    assert list(Message.objects.values_list("seq", flat=True)) == [1]
    attachment.refresh_from_db()
    assert attachment.message_id == sent[0].message.pk


@pytest.mark.django_db(transaction=True)
async def test_websocket_send_with_an_attachment_reaches_every_member(api_client_for, make_user):
    alice, bob = [await database_sync_to_async(make_user)(n) for n in ("alice", "bob")]
    team = await database_sync_to_async(make_group)(alice, bob)
    client = api_client_for(alice)
    body = await database_sync_to_async(uploaded)(client, wav_bytes(), "n.wav", "audio/wav")
    async with ws_session(alice) as (mine, _), ws_session(bob) as (theirs, _):
        for ws in (mine, theirs):
            await ws.send_json_to({"type": "conversation:join", "conversation": team.pk})
            assert (await ws.receive_json_from(WS_TIMEOUT))["type"] == "conversation:joined"
        frame = {"type": "message:send", "conversation": team.pk, "client_id": "w1"}
        # Wrong kind first: refused, nothing stored, the attachment still unsent.
        await mine.send_json_to({**frame, "kind": "image", "attachment": body["id"]})
        status = await _next(mine, "message:status")
        assert status["status"] == "failed" and status["error"]["code"] == "bad_request"
        await mine.send_json_to({**frame, "kind": "audio", "attachment": body["id"]})
        status = await _next(mine, "message:status")
        assert status["status"] == "sent", status
        received = (await _next(theirs, "message:receive"))["message"]
        assert received["id"] == status["message_id"] and received["kind"] == "audio"
        assert received["attachment"] == body
        assert (await _next(mine, "message:receive"))["message"] == received
    assert await database_sync_to_async(Message.objects.count)() == 1


async def _next(ws, frame_type: str) -> dict:
    while True:
        frame = await ws.receive_json_from(WS_TIMEOUT)
        if frame["type"] == frame_type:
            return frame


# --- Query counts


def _send_attachments(user, conversation, count: int) -> None:
    for _ in range(count):
        attachment = Attachment.objects.create(
            uploader=user, kind="image", content_type="image/png", size=1, file="x.png"
        )
        services.message_post(
            user=user,
            conversation_id=conversation.pk,
            client_id=uuid.uuid4().hex,
            kind="image",
            attachment_id=attachment.pk,
        )


def test_history_with_attachments_costs_no_query_per_message(api, alice, team):
    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            response = api.get(messages_url(team.pk) + "?limit=200")
        assert response.status_code == 200
        assert all(m["attachment"] for m in response.json()["results"])
        return len(captured)

    _send_attachments(alice, team, 1)
    one = queries()
    _send_attachments(alice, team, 20)
    assert queries() == one


def test_sending_an_attachment_costs_a_fixed_number_of_queries(alice, team):
    attachment = Attachment.objects.create(
        uploader=alice, kind="image", content_type="image/png", size=1, file="x.png"
    )
    with CaptureQueriesContext(connection) as captured:
        services.message_post(
            user=alice,
            conversation_id=team.pk,
            client_id="q",
            kind="image",
            attachment_id=attachment.pk,
        )
    # check the attachment; SAVEPOINT, seq and INSERT in one statement, claim (UPDATE),
    # RELEASE
    assert len(captured) == 5, [q["sql"] for q in captured]
