"""The REST API as a mobile app uses it, end to end (contract section 6), and every
endpoint's answer to bad input: 4xx with a JSON `{code, message}` body, nothing
stored. Real PostgreSQL, Redis and JWTs; the websocket through the ASGI app."""

from __future__ import annotations

import json

import pytest
from channels.db import database_sync_to_async
from django.conf import settings as django_settings
from rest_framework_simplejwt.token_blacklist.models import BlacklistedToken, OutstandingToken
from rest_framework_simplejwt.tokens import RefreshToken

from accounts.models import User
from chat import services
from chat.models import Attachment, Conversation, Feedback, Membership, Message
from tests.conftest import WS_TIMEOUT, ws_session
from tests.test_attachments import UPLOAD, file_url, image_bytes, upload, wav_bytes
from tests.test_rest import (
    CHARACTERS,
    CONVERSATIONS,
    ME,
    REFRESH,
    REGISTER,
    STRONG_PASSWORD,
    TEST_PASSWORD,
    TOKEN,
    _fast_password_hashing,  # noqa: F401 (autouse fixture)
    _fresh_auth_throttle,  # noqa: F401 (autouse fixture)
    assert_error,
    assert_unauthenticated,
    conversation_url,
    make_group,
    messages_url,
)

pytestmark = pytest.mark.django_db

LOGOUT = "/api/auth/logout/"


def read_url(conversation_id: int) -> str:
    return f"{CONVERSATIONS}{conversation_id}/read/"


@pytest.fixture(autouse=True)
def _media_root(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"


async def next_frame(ws, frame_type: str) -> dict:
    while True:
        frame = await ws.receive_json_from(WS_TIMEOUT)
        if frame["type"] == frame_type:
            return frame


# --- A mobile client's whole path


@pytest.mark.django_db(transaction=True)
async def test_a_mobile_clients_whole_path(api_client_for, character):
    """Sign up, sign in, pick a character, chat over REST while another device listens
    on its socket, page through history, mark it read, refresh, log out."""
    phone = api_client_for()
    call = database_sync_to_async

    async def rest(method: str, path: str, body=None, status: int = 200, **kwargs):
        if method == "get":
            response = await call(phone.get)(path)
        else:
            response = await call(getattr(phone, method))(
                path, body, **({"format": "json"} | kwargs)
            )
        assert response.status_code == status, (method, path, response.content)
        return response.json() if response.content else None

    # Sign up and sign in.
    signup = {"username": "maya", "password": STRONG_PASSWORD, "display_name": "Maya"}
    user = await rest("post", REGISTER, signup, 201)
    assert user["username"] == "maya" and user["display_name"] == "Maya"
    pair = await rest("post", TOKEN, {"username": "maya", "password": STRONG_PASSWORD})
    phone.credentials(HTTP_AUTHORIZATION=f"Bearer {pair['access']}")
    assert (await rest("get", ME))["id"] == user["id"]

    # Characters, and the conversation with one (get-or-create).
    characters = await rest("get", CHARACTERS)
    assert [c["slug"] for c in characters] == ["tester"]
    conversation = await rest("post", CONVERSATIONS, {"character": "tester"}, 201)
    cid = conversation["id"]
    assert (await rest("post", CONVERSATIONS, {"character": "tester"}))["id"] == cid
    assert conversation["last_message"]["text"] == character.greeting
    assert conversation["unread_count"] == 1  # the greeting

    # The tablet listens on its socket, authenticated with the same access token.
    async with ws_session(path=f"/ws/chat/?token={pair['access']}") as (tablet, ready):
        assert ready["user"]["id"] == user["id"]
        await tablet.send_json_to({"type": "conversation:join", "conversation": cid})
        joined = await next_frame(tablet, "conversation:joined")
        assert joined["last_seq"] == 1

        # The phone sends over REST; the tablet receives the same message object.
        sent = await rest("post", messages_url(cid), {"client_id": "m1", "text": "Hi!"}, 201)
        received = (await next_frame(tablet, "message:receive"))["message"]
        assert received == sent and sent["seq"] == 2
        # A retry after a lost answer: the same message, not broadcast again.
        assert await rest("post", messages_url(cid), {"client_id": "m1", "text": "Hi!"}) == sent

        # A voice note: upload, then send it with its kind.
        note = await call(upload)(phone, wav_bytes(), "note.wav", "audio/wav")
        assert note.status_code == 201, note.content
        note = note.json()
        voice = {"client_id": "m2", "kind": "audio", "attachment": note["id"]}
        sent_note = await rest("post", messages_url(cid), voice, 201)
        received = (await next_frame(tablet, "message:receive"))["message"]
        assert received == sent_note and received["attachment"]["waveform"] == note["waveform"]
        for n in range(3, 8):
            await rest("post", messages_url(cid), {"client_id": f"m{n}", "text": f"#{n}"}, 201)
            assert (await next_frame(tablet, "message:receive"))["message"]["seq"] == n + 1
        assert await tablet.receive_nothing(timeout=0.3)

    # History, paged backwards by seq from the newest, 3 at a time.
    seqs, before = [], None
    while True:
        query = f"?limit=3&before={before}" if before else "?limit=3"
        page = await rest("get", messages_url(cid) + query)
        seqs = [m["seq"] for m in page["results"]] + seqs
        if not page["has_more"]:
            break
        before = page["results"][0]["seq"]
    assert seqs == list(range(1, 9))
    forward = await rest("get", messages_url(cid) + "?after=6")
    assert [m["seq"] for m in forward["results"]] == [7, 8] and forward["has_more"] is False

    # Read marker and unread count.
    listed = (await rest("get", CONVERSATIONS))[0]
    assert listed["id"] == cid and listed["unread_count"] == 1 and listed["last_seq"] == 8
    marked = await rest("post", read_url(cid), {"seq": 8})
    assert marked["read_seq"] == 8 and marked["unread_count"] == 0
    assert (await rest("get", conversation_url(cid)))["unread_count"] == 0

    # Refresh (rotating), then log out: the refresh token is dead.
    refreshed = await rest("post", REFRESH, {"refresh": pair["refresh"]})
    assert refreshed["refresh"] != pair["refresh"]
    phone.credentials(HTTP_AUTHORIZATION=f"Bearer {refreshed['access']}")
    assert (await rest("get", ME))["username"] == "maya"
    assert await rest("post", LOGOUT, {"refresh": refreshed["refresh"]}, 204) is None
    phone.credentials()
    response = await call(phone.post)(REFRESH, {"refresh": refreshed["refresh"]}, format="json")
    assert_unauthenticated(response)


# --- Logout


def _pair(client, username: str = "alice") -> dict:
    response = client.post(TOKEN, {"username": username, "password": TEST_PASSWORD}, format="json")
    assert response.status_code == 200, response.content
    return response.json()


def test_logout_blacklists_the_refresh_token_without_needing_an_access_token(
    api_client_for, make_user
):
    make_user("alice")
    client = api_client_for()
    pair = _pair(client)
    # An expired or missing access token does not stop a logout.
    client.credentials(HTTP_AUTHORIZATION="Bearer expired.or.garbage")
    response = client.post(LOGOUT, {"refresh": pair["refresh"]}, format="json")
    assert response.status_code == 204, response.content
    assert not response.content
    assert BlacklistedToken.objects.count() == 1
    refresh = api_client_for().post(REFRESH, {"refresh": pair["refresh"]}, format="json")
    assert_unauthenticated(refresh)
    # Logging out twice: the token is already dead, as refresh says.
    again = api_client_for().post(LOGOUT, {"refresh": pair["refresh"]}, format="json")
    assert_unauthenticated(again)


def test_logging_out_one_device_leaves_the_others_signed_in(api_client_for, make_user):
    make_user("alice")
    phone, tablet = _pair(api_client_for()), _pair(api_client_for())
    response = api_client_for().post(LOGOUT, {"refresh": phone["refresh"]}, format="json")
    assert response.status_code == 204
    again = api_client_for().post(REFRESH, {"refresh": tablet["refresh"]}, format="json")
    assert again.status_code == 200, again.content


@pytest.mark.parametrize(
    ("body", "content_type", "status"),
    [
        ("{", "application/json", 400),
        ("[]", "application/json", 400),
        ("{}", "application/json", 400),
        ('{"refresh": 5}', "application/json", 401),
        ('{"refresh": "not.a.token"}', "application/json", 401),
        ('{"refresh": null}', "application/json", 400),
        ("<refresh/>", "application/xml", 415),
    ],
)
def test_bad_logouts_are_4xx_and_blacklist_nothing(
    api_client_for, make_user, body, content_type, status
):
    make_user("alice")
    _pair(api_client_for())
    response = api_client_for().post(LOGOUT, body, content_type=content_type)
    assert_error(response, status)
    assert not BlacklistedToken.objects.exists()


def test_logout_with_an_access_token_is_401(api_client_for, make_user):
    user = make_user("alice")
    access = str(RefreshToken.for_user(user).access_token)
    assert_unauthenticated(api_client_for().post(LOGOUT, {"refresh": access}, format="json"))
    assert not BlacklistedToken.objects.exists()


# --- Sending is rate limited, over REST and the websocket alike


@pytest.fixture
def send_rate(settings):
    """3 sends per user per day (a window no test run crosses in practice)."""
    rates = {**django_settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"], "send": "3/day"}
    settings.REST_FRAMEWORK = {**django_settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": rates}


@pytest.mark.django_db(transaction=True)
async def test_rest_and_websocket_sends_share_one_rate_limit(api_client_for, make_user, send_rate):
    alice, bob = [await database_sync_to_async(make_user)(n) for n in ("alice", "bob")]
    team = await database_sync_to_async(make_group)(alice, bob)
    post = database_sync_to_async(api_client_for(alice).post)
    for n in (1, 2):
        sent = await post(messages_url(team.pk), {"client_id": f"r{n}", "text": "x"}, format="json")
        assert sent.status_code == 201, sent.content
    async with ws_session(alice) as (ws, _):
        frame = {"type": "message:send", "conversation": team.pk, "text": "x"}
        await ws.send_json_to({**frame, "client_id": "w3"})
        assert (await next_frame(ws, "message:status"))["status"] == "sent"
        await ws.send_json_to({**frame, "client_id": "w4"})
        status = await next_frame(ws, "message:status")
        assert status["status"] == "failed" and status["error"]["code"] == "rate_limited"
        # A retry of a stored message is still answered with it (guarantee 2).
        await ws.send_json_to({**frame, "client_id": "w3"})
        status = await next_frame(ws, "message:status")
        assert status["status"] == "sent" and status["duplicate"] is True and status["seq"] == 3
    limited = await post(messages_url(team.pk), {"client_id": "r5", "text": "x"}, format="json")
    body = assert_error(limited, 429, "rate_limited")
    assert int(limited["Retry-After"]) > 0 and body["retry_after"] == int(limited["Retry-After"])
    retry = await post(messages_url(team.pk), {"client_id": "r1", "text": "x"}, format="json")
    assert retry.status_code == 200 and retry.json()["seq"] == 1
    # Another user has a budget of their own.
    bobs = database_sync_to_async(api_client_for(bob).post)
    sent = await bobs(messages_url(team.pk), {"client_id": "b1", "text": "x"}, format="json")
    assert sent.status_code == 201, sent.content
    assert await database_sync_to_async(Message.objects.count)() == 4


# --- Bad input on every endpoint: 4xx, a JSON body, nothing stored


def _counts() -> dict[str, int]:
    models = [User, Conversation, Membership, Message, Attachment, Feedback, OutstandingToken]
    return {m.__name__: m.objects.count() for m in models}


@pytest.fixture
def world(make_user, character, api_client_for):
    """alice (the client) in a group with bob, a character conversation with a reply
    to give feedback on, and carol's group that alice is not in."""
    alice, bob, carol = make_user("alice"), make_user("bob"), make_user("carol")
    team = make_group(alice, bob)
    services.message_post(user=bob, conversation_id=team.pk, client_id="b", text="hi")
    mine, _ = services.conversation_open_with_character(user=alice, slug="tester")
    theirs = make_group(carol, bob, title="Not alice's")
    carols = services.message_post(user=carol, conversation_id=theirs.pk, client_id="c", text="x")
    carols_file = Attachment.objects.create(
        uploader=carol, kind="image", content_type="image/png", size=1, file="x.png"
    )
    return {
        "api": api_client_for(alice),
        "team": team,
        "mine": mine,
        "greeting": mine.messages.get(seq=1),
        "theirs": theirs,
        "carols_message": carols.message,
        "carols_file": carols_file,
    }


def dumps(**fields) -> str:
    return json.dumps(fields)


def _bad_requests(w: dict) -> list[tuple[str, str, str, str, int]]:
    """(method, path, body, content type, expected status)."""
    team, mine, theirs = w["team"].pk, w["mine"].pk, w["theirs"].pk
    feedback = f"/api/messages/{w['greeting'].pk}/feedback/"
    carols, file = w["carols_message"].pk, w["carols_file"].pk
    js = "application/json"
    return [
        ("post", REGISTER, '{"username": ', js, 400),
        ("post", REGISTER, '{"username": ["x"], "password": 5}', js, 400),
        ("post", REGISTER, dumps(username="x", password=STRONG_PASSWORD, email="no"), js, 400),
        ("post", TOKEN, "{", js, 400),
        ("post", TOKEN, '{"username": 1}', js, 400),
        ("post", REFRESH, "{", js, 400),
        ("post", REFRESH, '{"refresh": ["x"]}', js, 400),
        ("post", LOGOUT, "{", js, 400),
        ("post", CONVERSATIONS, "{", js, 400),
        ("post", CONVERSATIONS, '{"character": 5}', js, 404),  # no such slug
        ("post", CONVERSATIONS, '{"character": "nobody"}', js, 404),
        ("post", CONVERSATIONS, '{"title": ["x"], "members": ["bob"]}', js, 400),
        ("post", CONVERSATIONS, '{"title": "x", "members": [1, {"a": 2}]}', js, 400),
        ("post", CONVERSATIONS, '{"title": "x", "characters": ["nobody"]}', js, 400),
        ("post", CONVERSATIONS, "character=tester", "text/plain", 415),
        ("get", conversation_url(theirs), "", js, 404),
        ("get", conversation_url(10**12), "", js, 404),
        ("get", messages_url(theirs), "", js, 404),
        ("get", messages_url(team) + "?before=x", "", js, 400),
        ("get", messages_url(team) + "?limit=1000", "", js, 400),
        ("post", messages_url(team), "{", js, 400),
        ("post", messages_url(team), '{"client_id": 5, "text": "x"}', js, 400),
        ("post", messages_url(team), '{"client_id": "a", "text": ["x"]}', js, 400),
        ("post", messages_url(team), '{"client_id": "a", "text": "x", "reply_to": "y"}', js, 400),
        ("post", messages_url(team), dumps(client_id="a", text="x", reply_to=carols), js, 400),
        ("post", messages_url(team), dumps(client_id="a", kind="image", attachment=file), js, 400),
        ("post", messages_url(theirs), '{"client_id": "a", "text": "x"}', js, 404),
        ("post", messages_url(10**12), '{"client_id": "a", "text": "x"}', js, 404),
        ("post", f"{CONVERSATIONS}{team}/characters/", '{"character": 5}', js, 400),
        ("post", f"{CONVERSATIONS}{theirs}/characters/", '{"character": "tester"}', js, 404),
        ("post", read_url(team), '{"seq": "x"}', js, 400),
        ("post", read_url(team), '{"seq": -1}', js, 400),
        ("post", read_url(theirs), '{"seq": 1}', js, 404),
        ("post", feedback, "{", js, 400),
        ("post", feedback, '{"value": 2}', js, 400),
        ("post", feedback, '{"value": "up"}', js, 400),
        ("post", f"/api/messages/{w['carols_message'].pk}/feedback/", '{"value": 1}', js, 404),
        ("post", UPLOAD, '{"file": "x"}', js, 415),
        ("get", file_url(w["carols_file"].pk), "", js, 404),
        ("get", f"{CHARACTERS}nobody/", "", js, 404),
        ("get", messages_url(mine) + "?after=-1", "", js, 400),
    ]


def test_every_endpoint_answers_bad_input_with_a_json_4xx_and_stores_nothing(world):
    api = world["api"]
    before = _counts()
    failures = []
    for method, path, body, content_type, status in _bad_requests(world):
        if method == "get":
            response = api.get(path)
        else:
            response = api.post(path, body, content_type=content_type)
        try:
            assert_error(response, status)
        except AssertionError as error:
            failures.append(f"{method.upper()} {path} {body!r}: {error}")
    assert not failures, "\n".join(failures)
    assert _counts() == before
    world["greeting"].refresh_from_db()
    assert not Feedback.objects.exists()
    assert Membership.objects.get(user__username="alice", conversation=world["team"]).read_seq == 0


def test_other_users_objects_are_404_with_nothing_of_theirs_in_the_body(world):
    api, theirs = world["api"], world["theirs"]
    paths = [
        conversation_url(theirs.pk),
        messages_url(theirs.pk),
        file_url(world["carols_file"].pk),
    ]
    for path in paths:
        body = assert_error(api.get(path), 404, "not_found")
        text = json.dumps(body)
        assert "Not alice's" not in text and "carol" not in text, body
    listed = {c["id"] for c in api.get(CONVERSATIONS).json()}
    assert theirs.pk not in listed


def test_uploading_files_and_sending_them_is_one_rest_path(world):
    api, team = world["api"], world["team"]
    image = upload(api, image_bytes("WEBP"), "p.webp", "image/webp")
    assert image.status_code == 201, image.content
    sent = api.post(
        messages_url(team.pk),
        {"client_id": "img", "kind": "image", "attachment": image.json()["id"], "text": "view"},
        format="json",
    )
    assert sent.status_code == 201, sent.content
    assert sent.json()["attachment"]["kind"] == "image"


# --- The schema describes every endpoint of the contract, errors included

CONTRACT = {
    "/api/auth/register/": {"post"},
    "/api/auth/token/": {"post"},
    "/api/auth/token/refresh/": {"post"},
    "/api/auth/logout/": {"post"},
    "/api/auth/ws-ticket/": {"post"},
    "/api/me/": {"get"},
    "/api/characters/": {"get"},
    "/api/characters/{slug}/": {"get"},
    "/api/conversations/": {"get", "post"},
    "/api/conversations/{conversation_id}/": {"get"},
    "/api/conversations/{conversation_id}/messages/": {"get", "post"},
    "/api/attachments/": {"post"},
    "/api/attachments/{attachment_id}/file/": {"get"},
    "/api/messages/{message_id}/feedback/": {"post"},
}


def test_schema_documents_every_endpoint_with_its_bodies_and_errors(api_client_for):
    schema = api_client_for().get("/api/schema/?format=json").json()
    error = schema["components"]["schemas"]["Error"]
    assert {"code", "message"} <= set(error["required"])
    for path, methods in CONTRACT.items():
        for method in methods:
            operation = schema["paths"][path][method]
            responses = operation["responses"]
            ok = [s for s in responses if s.startswith("2")]
            assert ok, (path, method)
            if method == "post" and path != "/api/auth/ws-ticket/":
                assert operation["requestBody"]["content"], (path, method)
                assert responses["400"]["content"]["application/json"]["schema"] == {
                    "$ref": "#/components/schemas/Error"
                }
            for status in ok:
                assert status == "204" or responses[status].get("content"), (path, status)
            if "{" in path:
                assert "404" in responses, path
            if operation.get("security") and {} not in operation["security"]:
                assert "401" in responses, path
    upload_op = schema["paths"]["/api/attachments/"]["post"]
    assert {"413", "429"} <= set(upload_op["responses"])
    assert "multipart/form-data" in upload_op["requestBody"]["content"]
    send = schema["paths"]["/api/conversations/{conversation_id}/messages/"]["post"]
    assert "429" in send["responses"]
    for auth in ("/api/auth/register/", "/api/auth/token/", "/api/auth/token/refresh/"):
        assert "429" in schema["paths"][auth]["post"]["responses"], auth
