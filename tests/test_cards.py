"""Character Card V2 import and export (issue 3, point 9): the mapping, JSON and PNG round
trips, V1 cards, hostile files (400/413 and nothing stored, never a crash), REST
permissions and formats, and the admin's import view, export action and links."""

from __future__ import annotations

import base64
import io
import json
import random
import struct
import zlib

import pytest
from django.core.files.base import ContentFile
from PIL import Image, PngImagePlugin

from characters import cards
from characters.models import Character
from characters.services import character_import_card
from config.errors import ApplicationError

pytestmark = pytest.mark.django_db

IMPORT = "/api/characters/import/"
ADMIN_CHANGELIST = "/admin/characters/character/"
ADMIN_IMPORT = "/admin/characters/character/import/"


def card_url(slug: str, fmt: str | None = None) -> str:
    return f"/api/characters/{slug}/card/" + (f"?format={fmt}" if fmt else "")


def v2_card(**data) -> dict:
    fields = {
        "name": "Captain Mira",
        "description": "{{char}} is the captain of the airship Kestrel. She is blunt.",
        "personality": "Brave, sardonic, loyal to her crew.",
        "scenario": "{{user}} has just stowed away on the Kestrel.",
        "first_mes": "*{{char}} lowers her spyglass.* Well, well. A stowaway.",
        "mes_example": "<START>\n{{user}}: Who are you?\n{{char}}: Your captain, for now.",
        "creator_notes": "A sky-pirate captain with a soft spot.\nMore notes here.",
        "system_prompt": "Stay in character as {{char}}. {{original}}",
        "post_history_instructions": "",
        "alternate_greetings": ["Another one? Fine.", "*{{char}} sighs.* Welcome aboard."],
        "character_book": {"entries": [{"keys": ["kestrel"], "content": "An airship."}]},
        "tags": ["fantasy", "pirate", "airship"],
        "creator": "someone",
        "character_version": "1.2",
        "extensions": {"depth_prompt": {"depth": 4, "prompt": "x"}},
    }
    fields.update(data)
    return {"spec": "chara_card_v2", "spec_version": "2.0", "data": fields}


def png_bytes(
    *, text: dict[str, str] | None = None, size=(60, 90), color=(200, 40, 40), mode="RGB"
) -> bytes:
    info = PngImagePlugin.PngInfo()
    for keyword, value in (text or {}).items():
        info.add_text(keyword, value)
    out = io.BytesIO()
    Image.new(mode, size, color).save(out, "PNG", pnginfo=info)
    return out.getvalue()


def card_png(card: dict, **kwargs) -> bytes:
    encoded = base64.b64encode(json.dumps(card).encode()).decode()
    return png_bytes(text={"chara": encoded}, **kwargs)


def upload(client, data: bytes, name: str = "card.png", **extra):
    return client.post(IMPORT, {"file": ContentFile(data, name=name), **extra}, format="multipart")


def assert_error(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.content
    assert response["Content-Type"].startswith("application/json")
    body = response.json()
    assert body["code"] == code and isinstance(body["message"], str) and body["message"], body
    return body


def parley_fields(character: Character) -> dict:
    return {
        field: getattr(character, field)
        for field in (
            "name",
            "persona",
            "greeting",
            "alternate_greetings",
            "tags",
            "tagline",
            "model",
            "temperature",
            "max_output_tokens",
            "context_budget",
        )
    }


def media_files(root) -> list:
    return [p for p in root.rglob("*") if p.is_file()]


@pytest.fixture(autouse=True)
def media_root(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"
    return settings.MEDIA_ROOT


@pytest.fixture
def staff(make_user):
    return make_user(is_staff=True, is_superuser=True)


@pytest.fixture
def staff_api(api_client_for, staff):
    return api_client_for(staff)


@pytest.fixture
def admin_client(client, staff):
    client.force_login(staff)
    return client


# --- Mapping


def test_v2_card_maps_to_character_fields():
    fields = cards.card_to_character_fields(v2_card())
    assert fields["name"] == "Captain Mira"
    assert fields["slug"] == "captain-mira"
    persona = fields["persona"]
    # Every prompt field, in order, under a heading; {{char}} is the name, {{original}} gone.
    headings = ["## Instructions", "## Description", "## Personality", "## Scenario"]
    positions = [persona.index(h) for h in [*headings, "## Example dialogue"]]
    assert positions == sorted(positions)
    assert "Stay in character as Captain Mira." in persona
    assert "{{original}}" not in persona and "{{char}}" not in persona
    assert "Captain Mira is the captain of the airship Kestrel." in persona
    assert "{{user}} has just stowed away" in persona  # the user's name is not known here
    assert "Captain Mira: Your captain, for now." in persona
    assert fields["greeting"] == "*Captain Mira lowers her spyglass.* Well, well. A stowaway."
    assert fields["alternate_greetings"] == [
        "Another one? Fine.",
        "*Captain Mira sighs.* Welcome aboard.",
    ]
    assert fields["tags"] == ["fantasy", "pirate", "airship"]
    assert fields["tagline"] == "A sky-pirate captain with a soft spot."


def test_tagline_falls_back_to_the_descriptions_first_sentence_and_is_capped():
    fields = cards.card_to_character_fields(
        v2_card(creator_notes="  \n", description="A quiet archivist. Knows every book.")
    )
    assert fields["tagline"] == "A quiet archivist."
    long = "word " * 100
    fields = cards.card_to_character_fields(v2_card(creator_notes=long))
    assert len(fields["tagline"]) == 200 and fields["tagline"].endswith("…")


def test_a_card_with_only_a_name_gets_a_minimal_persona():
    fields = cards.card_to_character_fields({"name": "Bare"})
    assert fields["persona"] == "You are Bare."
    assert fields["greeting"] == "" and fields["tags"] == [] and fields["tagline"] == ""


def test_single_section_personas_stay_bare():
    fields = cards.card_to_character_fields({"name": "Solo", "description": "Only this."})
    assert fields["persona"] == "Only this."


# --- REST import


def test_v2_json_import_creates_a_draft_character(staff_api):
    response = upload(staff_api, json.dumps(v2_card()).encode(), name="mira.json")
    assert response.status_code == 201, response.content
    body = response.json()
    character = Character.objects.get(pk=body["id"])
    assert body["slug"] == character.slug == "captain-mira"
    assert body["name"] == "Captain Mira" and body["avatar"] is None
    assert body["is_public"] is False and body["tags"] == ["fantasy", "pirate", "airship"]
    assert body["persona"] == character.persona and "## Personality" in character.persona
    assert character.greeting.startswith("*Captain Mira lowers")
    assert not character.avatar


def test_public_flag_on_import(staff_api):
    response = upload(staff_api, json.dumps(v2_card()).encode(), name="m.json", public="true")
    assert response.status_code == 201, response.content
    assert Character.objects.get(pk=response.json()["id"]).is_public


def test_v1_card_import(staff_api):
    v1 = {
        "name": "Old Timer",
        "description": "A card from before V2.",
        "personality": "Grumpy.",
        "scenario": "A porch.",
        "first_mes": "Get off my lawn, {{user}}.",
        "mes_example": "",
    }
    response = upload(staff_api, json.dumps(v1).encode(), name="old.json")
    assert response.status_code == 201, response.content
    character = Character.objects.get(slug="old-timer")
    assert character.name == "Old Timer"
    assert character.greeting == "Get off my lawn, {{user}}."
    assert "## Description\n\nA card from before V2." in character.persona
    assert "## Personality\n\nGrumpy." in character.persona
    assert "## Scenario\n\nA porch." in character.persona
    assert character.tagline == "A card from before V2."


def test_png_import_stores_the_picture_as_avatar(staff_api, media_root):
    data = card_png(v2_card(), size=(60, 90), color=(10, 200, 30))
    response = upload(staff_api, data)
    assert response.status_code == 201, response.content
    character = Character.objects.get(pk=response.json()["id"])
    assert response.json()["avatar"] == character.avatar.url
    assert character.avatar.name.startswith("avatars/characters/captain-mira")
    with character.avatar.open("rb") as handle:
        stored = handle.read()
    image = Image.open(io.BytesIO(stored))
    assert image.size == (60, 90) and image.getpixel((5, 5))[:3] == (10, 200, 30)
    # The stored avatar is a clean picture: the card's text is not carried along.
    assert "chara" not in image.info and b"chara" not in stored


def test_large_png_avatars_are_downscaled(staff_api):
    response = upload(staff_api, card_png(v2_card(), size=(2000, 3000)))
    assert response.status_code == 201, response.content
    character = Character.objects.get(pk=response.json()["id"])
    with character.avatar.open("rb") as handle:
        assert Image.open(handle).size == (683, 1024)


def test_v3_cards_fall_back_to_the_ccv3_chunk(staff_api):
    card = {"spec": "chara_card_v3", "spec_version": "3.0", "data": {"name": "Three"}}
    encoded = base64.b64encode(json.dumps(card).encode()).decode()
    response = upload(staff_api, png_bytes(text={"ccv3": encoded}))
    assert response.status_code == 201, response.content
    assert response.json()["name"] == "Three"


def test_compressed_text_chunks_are_read():
    """zTXt/iTXt with the `chara` keyword (some tools compress)."""
    card = json.dumps(v2_card(name="Zipped")).encode()
    body = b"chara\0\0" + zlib.compress(base64.b64encode(card))
    chunk = struct.pack(">I", len(body)) + b"zTXt" + body + struct.pack(">I", 0)
    plain = png_bytes()
    data = plain[:33] + chunk + plain[33:]  # after IHDR
    assert cards.card_from_png(data)["data"]["name"] == "Zipped"
    info = PngImagePlugin.PngInfo()
    info.add_itxt("chara", base64.b64encode(card).decode(), zip=True)
    out = io.BytesIO()
    Image.new("RGB", (4, 4)).save(out, "PNG", pnginfo=info)
    assert cards.card_from_png(out.getvalue())["data"]["name"] == "Zipped"


def test_big_compressed_cards_import_with_their_picture(staff_api):
    """Pillow caps compressed text chunks at 1 MiB; the picture is decoded without them."""
    card = json.dumps(v2_card(description="lore " * 400_000)).encode()
    info = PngImagePlugin.PngInfo()
    info.add_itxt("chara", base64.b64encode(card).decode(), zip=True)
    out = io.BytesIO()
    Image.new("RGB", (8, 8), (9, 9, 9)).save(out, "PNG", pnginfo=info)
    assert len(out.getvalue()) < 1_000_000 < len(card)
    response = upload(staff_api, out.getvalue())
    assert response.status_code == 201, response.content
    character = Character.objects.get(pk=response.json()["id"])
    assert character.avatar and "lore lore" in character.persona


def test_slugs_are_unique_and_never_shadow_the_import_path(staff_api):
    data = json.dumps(v2_card()).encode()
    slugs = [upload(staff_api, data, name="c.json").json()["slug"] for _ in range(3)]
    assert slugs == ["captain-mira", "captain-mira-2", "captain-mira-3"]
    response = upload(staff_api, json.dumps({"name": "Import"}).encode(), name="i.json")
    assert response.json()["slug"] == "import-card"
    response = upload(staff_api, json.dumps({"name": "日本語"}).encode(), name="j.json")
    assert response.json()["slug"] == "character"
    assert response.json()["name"] == "日本語"


def test_import_needs_staff(api_client_for, make_user, staff):
    data = json.dumps(v2_card()).encode()
    anonymous = upload(api_client_for(), data, name="c.json")
    assert_error(anonymous, 401, "not_authenticated")
    assert anonymous["WWW-Authenticate"].startswith("Bearer")
    assert_error(upload(api_client_for(make_user()), data, name="c.json"), 403, "forbidden")
    assert not Character.objects.exists()


def test_import_needs_a_file(staff_api):
    response = staff_api.post(IMPORT, {}, format="multipart")
    body = assert_error(response, 400, "bad_request")
    assert "file" in body["fields"]


# --- Hostile input


def _nested(depth: int) -> bytes:
    return b'{"name": "x", "extensions": ' + b"[" * depth + b"]" * depth + b"}"


VALID_PNG = None  # built lazily (Pillow at import time is fine, but keep collection cheap)


def _valid_png() -> bytes:
    global VALID_PNG
    if VALID_PNG is None:
        VALID_PNG = card_png(v2_card())
    return VALID_PNG


def _broken_pixels() -> bytes:
    """A structurally sound PNG card (right lengths and CRCs) whose image data is junk."""
    data = bytearray(_valid_png())
    at = data.index(b"IDAT") - 4
    (length,) = struct.unpack(">I", data[at : at + 4])
    start = at + 8
    data[start : start + length] = bytes(length)  # zeros: not a zlib stream
    data[start + length : start + length + 4] = struct.pack(
        ">I", zlib.crc32(b"IDAT" + bytes(length))
    )
    return bytes(data)


HOSTILE = {
    "random bytes": lambda: random.Random(1).randbytes(5000),
    "empty": lambda: b"",
    "png signature only": lambda: cards.PNG_SIGNATURE,
    "truncated png": lambda: _valid_png()[: len(_valid_png()) // 2],
    "png cut before IEND": lambda: _valid_png()[:-12],
    "png without a card": lambda: png_bytes(text={"Comment": "hello"}),
    "card chunk not base64": lambda: png_bytes(text={"chara": "!!!not base64!!!"}),
    "card chunk base64 of junk": lambda: png_bytes(
        text={"chara": base64.b64encode(b"\xff\xfe junk").decode()}
    ),
    "card chunk base64 of a list": lambda: png_bytes(
        text={"chara": base64.b64encode(b"[1, 2]").decode()}
    ),
    "png with broken pixels": _broken_pixels,
    "png with a bogus chunk length": lambda: _valid_png()[:8] + b"\xff\xff\xff\xf0IHDR" + b"x" * 30,
    "pixel bomb": lambda: card_png(v2_card(), size=(10_000, 10_000), mode="1", color=0),
    "json list": lambda: b'[{"name": "x"}]',
    "json string": lambda: b'"name"',
    "not utf-8": lambda: b'{"name": "\xff"}',
    "no name": lambda: json.dumps(v2_card(name="")).encode(),
    "blank name": lambda: json.dumps({"name": "   "}).encode(),
    "name not a string": lambda: json.dumps(v2_card(name=42)).encode(),
    "description a dict": lambda: json.dumps(v2_card(description={"a": 1})).encode(),
    "tags a string": lambda: json.dumps(v2_card(tags="a,b")).encode(),
    "greetings with a number": lambda: json.dumps(v2_card(alternate_greetings=["hi", 3])).encode(),
    "extensions a list": lambda: json.dumps(v2_card(extensions=[1])).encode(),
    "parley temperature NaN": lambda: (
        b'{"name": "x", "extensions": {"parley": {"temperature": NaN}}}'
    ),
    "parley temperature out of range": lambda: json.dumps(
        v2_card(extensions={"parley": {"temperature": 7}})
    ).encode(),
    "parley tokens a bool": lambda: json.dumps(
        v2_card(extensions={"parley": {"max_output_tokens": True}})
    ).encode(),
    "deeply nested": lambda: _nested(200_000),
    "huge integer": lambda: b'{"name": "x", "n": ' + b"9" * 100_000 + b"}",
    "truncated json": lambda: json.dumps(v2_card()).encode()[:-10],
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_files_are_bad_requests_and_store_nothing(staff_api, media_root, case):
    response = upload(staff_api, HOSTILE[case](), name="card.png")
    assert_error(response, 400, "bad_request")
    assert not Character.objects.exists()
    assert media_files(media_root) == []


def test_oversized_files_are_refused(staff_api, settings, media_root):
    settings.PARLEY_CARD_MAX_BYTES = 1000
    response = upload(staff_api, card_png(v2_card()))
    assert_error(response, 413, "too_large")
    with pytest.raises(ApplicationError) as caught:
        character_import_card(data=b"{" * 1001)
    assert caught.value.code == "too_large"
    assert not Character.objects.exists() and media_files(media_root) == []


def test_huge_strings_nul_and_lone_surrogates_are_stored_safely(staff_api):
    card = v2_card(description="x" * 1_000_000, personality="a\u0000b", tags=["ok\ud800"])
    data = json.dumps(card).encode()  # ensure_ascii: the surrogate is a \\ud800 escape
    response = upload(staff_api, data, name="big.json")
    assert response.status_code == 201, response.content
    character = Character.objects.get(pk=response.json()["id"])
    assert "x" * 1_000_000 in character.persona
    assert "ab" in character.persona and "\x00" not in character.persona
    assert character.tags == ["ok?"]


def test_fuzzed_pngs_never_crash_the_import(media_root):
    """Random byte flips, cuts and splices of a valid PNG card: every outcome is a
    character or a `bad_request`, never another exception."""
    rng = random.Random(20261124)
    valid = _valid_png()
    outcomes = {"imported": 0, "refused": 0}
    for _ in range(300):
        data = bytearray(valid)
        for _ in range(rng.randint(1, 8)):
            position = rng.randrange(len(data))
            data[position] = rng.randrange(256)
        if rng.random() < 0.3:
            data = data[: rng.randrange(len(data))]
        if rng.random() < 0.2:
            at = rng.randrange(len(data) + 1)
            data[at:at] = rng.randbytes(rng.randint(1, 64))
        try:
            character_import_card(data=bytes(data))
        except ApplicationError as exc:
            assert exc.code == "bad_request", exc
            outcomes["refused"] += 1
        else:
            outcomes["imported"] += 1
    assert outcomes["refused"] > 0


# --- Export


def test_json_round_trip_keeps_parleys_fields(staff_api):
    card = v2_card(extensions={"parley": {"model": "claude-x", "temperature": 0.4}})
    first = Character.objects.get(pk=upload(staff_api, json.dumps(card).encode()).json()["id"])
    assert first.model == "claude-x" and first.temperature == 0.4
    exported = staff_api.get(card_url(first.slug, "json"))
    assert exported.status_code == 200
    assert exported["Content-Type"] == "application/json"
    assert exported["Content-Disposition"] == 'attachment; filename="captain-mira.json"'
    body = json.loads(exported.content)
    assert body["spec"] == "chara_card_v2" and body["spec_version"] == "2.0"
    assert body["data"]["description"] == first.persona
    assert body["data"]["first_mes"] == first.greeting
    assert body["data"]["extensions"]["parley"]["model"] == "claude-x"
    second_id = upload(staff_api, exported.content, name="again.json").json()["id"]
    second = Character.objects.get(pk=second_id)
    assert second.slug == "captain-mira-2"
    assert parley_fields(second) == parley_fields(first)


def test_png_round_trip_keeps_fields_and_picture(staff_api):
    data = card_png(v2_card(), size=(40, 40), color=(1, 2, 250))
    first = Character.objects.get(pk=upload(staff_api, data).json()["id"])
    exported = staff_api.get(card_url(first.slug, "png"))
    assert exported.status_code == 200, exported.content
    assert exported["Content-Type"] == "image/png"
    assert exported["Content-Disposition"] == 'attachment; filename="captain-mira.png"'
    assert cards.card_from_png(exported.content) == cards.character_to_card(first)
    image = Image.open(io.BytesIO(exported.content))
    assert image.size == (40, 40) and image.getpixel((3, 3))[:3] == (1, 2, 250)
    second = Character.objects.get(pk=upload(staff_api, exported.content).json()["id"])
    assert parley_fields(second) == parley_fields(first)
    assert second.avatar and second.avatar.name != first.avatar.name


def test_export_without_avatar_draws_a_placeholder(api_client_for, make_user, character):
    response = api_client_for(make_user()).get(card_url(character.slug, "png"))
    assert response.status_code == 200
    image = Image.open(io.BytesIO(response.content))
    assert image.format == "PNG" and image.size == (400, 600)
    card = cards.card_from_png(response.content)
    assert card["data"]["name"] == "Tester"
    assert card["data"]["description"] == "You test things."
    assert card["data"]["first_mes"] == "Hello, tester here."


def test_export_with_a_missing_avatar_file_still_works(api_client_for, make_user, character):
    character.avatar.name = "avatars/characters/gone.png"
    character.save()
    response = api_client_for(make_user()).get(card_url(character.slug, "png"))
    assert response.status_code == 200
    assert Image.open(io.BytesIO(response.content)).size == (400, 600)


def test_export_defaults_to_json_and_checks_the_format(api_client_for, make_user, character):
    client = api_client_for(make_user())
    response = client.get(card_url(character.slug))
    assert response.status_code == 200 and response["Content-Type"] == "application/json"
    assert json.loads(response.content)["data"]["name"] == "Tester"
    body = assert_error(client.get(card_url(character.slug, "xml")), 400, "bad_request")
    assert "format" in body["fields"]
    # An Accept header the card formats do not match does not turn into a 406.
    response = client.get(card_url(character.slug, "png"), HTTP_ACCEPT="image/png")
    assert response.status_code == 200 and response["Content-Type"] == "image/png"


def test_export_visibility(api_client_for, make_user, staff, character):
    draft = Character.objects.create(slug="draft", name="Draft", persona="p", is_public=False)
    user = api_client_for(make_user())
    assert_error(user.get(card_url(draft.slug)), 404, "not_found")
    assert_error(user.get(card_url("nobody")), 404, "not_found")
    assert api_client_for(staff).get(card_url(draft.slug, "png")).status_code == 200
    anonymous = api_client_for().get(card_url(character.slug))
    assert_error(anonymous, 401, "not_authenticated")


def test_export_with_session_auth(client, make_user, character):
    client.force_login(make_user())
    response = client.get(card_url(character.slug, "png"))
    assert response.status_code == 200 and response["Content-Type"] == "image/png"


def test_schema_lists_the_card_endpoints(staff_api):
    response = staff_api.get("/api/schema/?format=json")
    assert response.status_code == 200
    paths = json.loads(response.content)["paths"]
    assert "post" in paths["/api/characters/import/"]
    assert "get" in paths["/api/characters/{slug}/card/"]
    assert "post" in paths["/api/messages/{message_id}/feedback/"]


# --- Admin


def test_admin_changelist_links_the_import_view(admin_client, character):
    response = admin_client.get(ADMIN_CHANGELIST)
    assert response.status_code == 200
    assert ADMIN_IMPORT.encode() in response.content
    assert b"Export as Character Card (PNG)" in response.content


def test_admin_import_view_creates_the_character(admin_client, media_root):
    response = admin_client.get(ADMIN_IMPORT)
    assert response.status_code == 200 and b'enctype="multipart/form-data"' in response.content
    response = admin_client.post(
        ADMIN_IMPORT, {"card": ContentFile(card_png(v2_card()), name="mira.png")}, follow=True
    )
    character = Character.objects.get()
    assert response.redirect_chain[-1][0] == f"/admin/characters/character/{character.pk}/change/"
    assert "Imported “Captain Mira” as a draft" in response.content.decode()
    assert character.avatar and not character.is_public
    assert character.greeting.startswith("*Captain Mira")


def test_admin_import_view_shows_errors_and_stores_nothing(admin_client, media_root):
    response = admin_client.post(
        ADMIN_IMPORT, {"card": ContentFile(b"\x89PNG\r\n\x1a\nnope", name="x.png")}
    )
    assert response.status_code == 200
    assert b"The PNG is truncated." in response.content
    assert not Character.objects.exists() and media_files(media_root) == []


def test_admin_import_needs_staff(client, make_user):
    client.force_login(make_user())
    response = client.get(ADMIN_IMPORT)
    assert response.status_code == 302 and "/admin/login/" in response["Location"]


def test_admin_export_action_downloads_one_card(admin_client, character):
    other = Character.objects.create(slug="other", name="Other", persona="p")
    for action, content_type in (
        ("export_card_png", "image/png"),
        ("export_card_json", "application/json"),
    ):
        response = admin_client.post(
            ADMIN_CHANGELIST, {"action": action, "_selected_action": [character.pk]}
        )
        assert response.status_code == 200, response.content[:500]
        assert response["Content-Type"] == content_type
        assert response["Content-Disposition"].startswith("attachment; filename=")
    png = admin_client.post(
        ADMIN_CHANGELIST, {"action": "export_card_png", "_selected_action": [character.pk]}
    )
    assert cards.card_from_png(png.content)["data"]["name"] == "Tester"
    two = admin_client.post(
        ADMIN_CHANGELIST,
        {"action": "export_card_png", "_selected_action": [character.pk, other.pk]},
        follow=True,
    )
    assert b"Select exactly one character" in two.content


def test_admin_change_page_links_the_card_downloads(admin_client, character):
    change = f"/admin/characters/character/{character.pk}/change/"
    response = admin_client.get(change)
    assert response.status_code == 200
    for fmt in ("png", "json"):
        url = f"/admin/characters/character/{character.pk}/card/{fmt}/"
        assert url.encode() in response.content
        download = admin_client.get(url)
        assert download.status_code == 200
        assert download["Content-Disposition"] == f'attachment; filename="tester.{fmt}"'
    missing = admin_client.get("/admin/characters/character/999999/card/png/")
    assert missing.status_code == 302
