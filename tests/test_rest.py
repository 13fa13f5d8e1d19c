"""The REST surface of the contract (section 6), through DRF's APIClient with real JWTs
on real PostgreSQL: status codes, `{code, message}` error bodies, nothing stored on a
failure, membership checks, paging, idempotent sends, broadcast, query counts, schema."""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from datetime import timedelta

import pytest
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.core.cache import cache
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from drf_spectacular.drainage import GENERATOR_STATS
from rest_framework.throttling import ScopedRateThrottle
from rest_framework_simplejwt.tokens import AccessToken, RefreshToken

from accounts.models import User
from accounts.services import ws_ticket_consume
from characters.models import Character
from chat import services
from chat.broadcast import conversation_group
from chat.models import Conversation, Membership, Message
from tests.conftest import WS_TIMEOUT, access_token_for, ws_session

pytestmark = pytest.mark.django_db

REGISTER = "/api/auth/register/"
TOKEN = "/api/auth/token/"
REFRESH = "/api/auth/token/refresh/"
WS_TICKET = "/api/auth/ws-ticket/"
ME = "/api/me/"
CHARACTERS = "/api/characters/"
CONVERSATIONS = "/api/conversations/"
STRONG_PASSWORD = "correct-horse-battery-staple-42"
TEST_PASSWORD = "a-long-test-password"  # make_user's


def conversation_url(conversation_id: int) -> str:
    return f"{CONVERSATIONS}{conversation_id}/"


def messages_url(conversation_id: int) -> str:
    return f"{CONVERSATIONS}{conversation_id}/messages/"


def assert_error(response, status: int, code: str | None = None) -> dict:
    """A JSON error body with a string `code` and `message` (contract section 6)."""
    assert response.status_code == status, response.content
    assert response["Content-Type"].startswith("application/json"), response["Content-Type"]
    body = response.json()
    assert isinstance(body.get("code"), str), body
    assert isinstance(body.get("message"), str) and body["message"], body
    if code is not None:
        assert body["code"] == code, body
    return body


def assert_unauthenticated(response) -> dict:
    """401 with a Bearer challenge, never 403; one error about the credential, not a
    per-field validation error."""
    body = assert_error(response, 401)
    assert response["WWW-Authenticate"].startswith("Bearer"), response.headers
    assert "fields" not in body and body["message"] != "Invalid input.", body
    return body


def make_group(creator: User, *members: User, title: str = "Team") -> Conversation:
    return services.conversation_create_group(
        creator=creator, title=title, member_usernames=[m.username for m in members]
    )


def post(user: User, conversation: Conversation, count: int = 1) -> list[Message]:
    """`count` messages by `user` through the service the REST view uses."""
    return [
        services.message_post(
            user=user,
            conversation_id=conversation.pk,
            client_id=uuid.uuid4().hex,
            text=f"message {i} from {user.username}",
        ).message
        for i in range(count)
    ]


def fill(conversation: Conversation, sender: User, count: int) -> None:
    """`count` stored messages at once (for paging tests that only read them)."""
    conversation.refresh_from_db()
    start = conversation.last_seq
    Message.objects.bulk_create(
        Message(
            conversation=conversation,
            seq=start + i,
            client_id=f"fill-{start + i}",
            sender_user=sender,
            role=Message.Role.USER,
            text=f"#{start + i}",
            html=f"<p>#{start + i}</p>",
        )
        for i in range(1, count + 1)
    )
    Conversation.objects.filter(pk=conversation.pk).update(last_seq=start + count)
    conversation.refresh_from_db()


def query_count(client, url: str) -> int:
    with CaptureQueriesContext(connection) as queries:
        response = client.get(url)
    assert response.status_code == 200, response.content
    return len(queries)


def message_count() -> int:
    return Message.objects.count()


@pytest.fixture(autouse=True)
def _fresh_auth_throttle():
    """The anonymous `auth` throttle counts per client IP across tests: start each at 0."""
    key = ScopedRateThrottle.cache_format % {"scope": "auth", "ident": "127.0.0.1"}
    cache.delete(key)
    yield
    cache.delete(key)


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def alice(make_user):
    return make_user("alice")


@pytest.fixture
def bob(make_user):
    return make_user("bob")


@pytest.fixture
def anon(api_client_for):
    return api_client_for()


@pytest.fixture
def api(api_client_for, alice):
    """Alice's client."""
    return api_client_for(alice)


@pytest.fixture
def team(alice, bob):
    return make_group(alice, bob)


# --- Registration and tokens


def test_register_creates_an_account_that_can_sign_in(anon):
    response = anon.post(
        REGISTER,
        {"username": "carol", "password": STRONG_PASSWORD, "display_name": "Carol"},
        format="json",
    )
    assert response.status_code == 201, response.content
    body = response.json()
    user = User.objects.get(username="carol")
    assert body == {"id": user.pk, "username": "carol", "display_name": "Carol", "email": ""}
    assert user.check_password(STRONG_PASSWORD)
    token = anon.post(TOKEN, {"username": "carol", "password": STRONG_PASSWORD}, format="json")
    assert token.status_code == 200, token.content


@pytest.mark.parametrize("password", ["123", "password", "84736291047"])
def test_register_rejects_a_weak_password_and_stores_nothing(anon, password):
    response = anon.post(REGISTER, {"username": "carol", "password": password}, format="json")
    body = assert_error(response, 400, "bad_request")
    assert body["fields"]["password"], body
    assert not User.objects.filter(username="carol").exists()


@pytest.mark.parametrize("username", ["alice", "Alice", "ALICE"])
def test_register_rejects_a_taken_username(anon, alice, username):
    response = anon.post(
        REGISTER, {"username": username, "password": STRONG_PASSWORD}, format="json"
    )
    body = assert_error(response, 400, "bad_request")
    assert body["fields"]["username"], body
    assert User.objects.filter(username__iexact="alice").count() == 1
    alice.refresh_from_db()
    assert alice.check_password(TEST_PASSWORD)


@pytest.mark.parametrize(
    "payload",
    [
        '{"username": "carol", "password": ',  # malformed JSON
        "[]",  # not an object
        '{"password": "correct-horse-battery-staple-42"}',  # no username
        '{"username": "ca rol", "password": "correct-horse-battery-staple-42"}',
    ],
)
def test_register_rejects_bad_bodies_with_json_errors(anon, payload):
    response = anon.post(REGISTER, payload, content_type="application/json")
    assert_error(response, 400, "bad_request")
    assert not User.objects.exists()


def test_token_refresh_rotates_and_the_old_refresh_token_is_rejected(anon, api_client_for, alice):
    pair = anon.post(TOKEN, {"username": "alice", "password": TEST_PASSWORD}, format="json")
    assert pair.status_code == 200, pair.content
    pair = pair.json()
    anon.credentials(HTTP_AUTHORIZATION=f"Bearer {pair['access']}")
    assert anon.get(ME).json()["username"] == "alice"

    rotated = api_client_for().post(REFRESH, {"refresh": pair["refresh"]}, format="json")
    assert rotated.status_code == 200, rotated.content
    rotated = rotated.json()
    assert rotated["access"] and rotated["refresh"] != pair["refresh"]

    reused = api_client_for().post(REFRESH, {"refresh": pair["refresh"]}, format="json")
    assert_unauthenticated(reused)
    again = api_client_for().post(REFRESH, {"refresh": rotated["refresh"]}, format="json")
    assert again.status_code == 200, again.content


def test_token_with_a_wrong_password_is_401_with_bearer_challenge(anon, alice):
    response = anon.post(TOKEN, {"username": "alice", "password": "wrong-password"}, format="json")
    assert_unauthenticated(response)


def test_ws_ticket_is_single_use_and_lives_60_seconds(api, alice):
    response = api.post(WS_TICKET)
    assert response.status_code == 200, response.content
    body = response.json()
    assert set(body) == {"ticket", "expires_in"} and body["expires_in"] == 60
    assert ws_ticket_consume(ticket=body["ticket"]) == alice.pk
    assert ws_ticket_consume(ticket=body["ticket"]) is None


def test_auth_endpoints_are_throttled_with_a_json_429(anon):
    allowed, _ = ScopedRateThrottle().parse_rate(
        settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]["auth"]
    )
    for _ in range(allowed):
        assert anon.post(REGISTER, "{", content_type="application/json").status_code == 400
    response = anon.post(REGISTER, "{", content_type="application/json")
    assert_error(response, 429, "rate_limited")
    assert int(response["Retry-After"]) > 0


# --- Authentication: 401 with a Bearer challenge, never 403


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", ME),
        ("post", WS_TICKET),
        ("get", CHARACTERS),
        ("get", f"{CHARACTERS}tester/"),
        ("get", CONVERSATIONS),
        ("post", CONVERSATIONS),
        ("get", conversation_url(1)),
        ("get", messages_url(1)),
        ("post", messages_url(1)),
    ],
)
def test_no_credentials_is_401_with_bearer_challenge(anon, method, path):
    response = (
        getattr(anon, method)(path, {}, format="json") if method == "post" else anon.get(path)
    )
    assert_unauthenticated(response)


@pytest.mark.parametrize("kind", ["garbage", "expired", "inactive user", "refresh token"])
def test_invalid_bearer_token_is_401(api_client_for, make_user, kind):
    user = make_user(is_active=kind != "inactive user")
    if kind == "garbage":
        token = "not.a.jwt"
    elif kind == "expired":
        access = AccessToken.for_user(user)
        access.set_exp(lifetime=-timedelta(seconds=1))
        token = str(access)
    elif kind == "refresh token":
        token = str(RefreshToken.for_user(user))
    else:
        token = access_token_for(user)
    client = api_client_for()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    assert_unauthenticated(client.get(CONVERSATIONS))


# --- Characters


def test_characters_list_and_detail_hide_non_public_ones(api, character):
    Character.objects.create(slug="hidden", name="Hidden", persona="Secret.", is_public=False)
    listing = api.get(CHARACTERS)
    assert listing.status_code == 200, listing.content
    assert [c["slug"] for c in listing.json()] == ["tester"]
    detail = api.get(f"{CHARACTERS}tester/")
    assert detail.status_code == 200, detail.content
    assert detail.json()["name"] == "Tester"
    assert detail.json()["greeting"] == character.greeting
    assert_error(api.get(f"{CHARACTERS}hidden/"), 404, "not_found")
    assert_error(api.get(f"{CHARACTERS}nobody/"), 404, "not_found")
    assert_error(api.post(CONVERSATIONS, {"character": "hidden"}, format="json"), 404, "not_found")
    assert not Conversation.objects.exists()


# --- Creating conversations


def test_character_conversation_is_get_or_create_with_the_greeting_first(api, alice, character):
    first = api.post(CONVERSATIONS, {"character": "tester"}, format="json")
    assert first.status_code == 201, first.content
    conversation = first.json()
    assert conversation["kind"] == "character" and conversation["character"] == "tester"
    assert conversation["title"] == "Tester"
    assert [m["username"] for m in conversation["members"]] == ["alice"]
    assert conversation["last_seq"] == 1
    assert conversation["last_message"]["text"] == character.greeting

    again = api.post(CONVERSATIONS, {"character": "tester"}, format="json")
    assert again.status_code == 200, again.content
    assert again.json()["id"] == conversation["id"]
    assert Conversation.objects.count() == 1

    history = api.get(messages_url(conversation["id"])).json()["results"]
    assert [(m["seq"], m["sender"]["type"], m["text"]) for m in history] == [
        (1, "character", character.greeting)
    ]


def test_group_includes_its_creator(api, api_client_for, alice, bob):
    response = api.post(
        CONVERSATIONS, {"title": "Team", "members": ["bob", "bob", "alice"]}, format="json"
    )
    assert response.status_code == 201, response.content
    group = response.json()
    assert group["kind"] == "group" and group["title"] == "Team" and group["character"] is None
    assert sorted(m["username"] for m in group["members"]) == ["alice", "bob"]
    assert Membership.objects.filter(conversation_id=group["id"]).count() == 2
    assert api_client_for(bob).get(conversation_url(group["id"])).status_code == 200


@pytest.mark.parametrize(
    "payload",
    [
        {"title": "Team", "members": ["bob", "nobody"]},
        {"title": "Team", "members": ["dormant"]},  # deactivated
        {"character": "tester", "title": "Team"},
        {"character": "tester", "members": ["bob"]},
        {},
        {"members": ["bob"]},
        {"title": "   ", "members": ["bob"]},
        {"title": "Team", "members": "bob"},
    ],
)
def test_bad_conversation_create_is_400_and_stores_nothing(api, bob, make_user, character, payload):
    make_user("dormant", is_active=False)
    assert_error(api.post(CONVERSATIONS, payload, format="json"), 400, "bad_request")
    assert not Conversation.objects.exists()
    assert not Membership.objects.exists()


# --- Reading conversations


def test_list_is_mine_newest_activity_first_with_unread_counts(
    api, api_client_for, alice, bob, character
):
    with_tester, _ = services.conversation_open_with_character(user=alice, slug="tester")
    team = make_group(alice, bob)
    make_group(bob, title="Not Alice's")
    post(bob, team, 3)
    post(alice, team, 1)
    Membership.objects.filter(user=alice, conversation=team).update(read_seq=1)
    quiet = make_group(alice, title="Quiet")  # created last: its creation is its activity

    listing = api.get(CONVERSATIONS)
    assert listing.status_code == 200, listing.content
    by_id = {c["id"]: c for c in listing.json()}
    assert list(by_id) == [quiet.pk, team.pk, with_tester.pk]
    assert by_id[team.pk]["read_seq"] == 1 and by_id[team.pk]["last_seq"] == 4
    assert by_id[team.pk]["unread_count"] == 2  # bob's 2 and 3; alice's own 4 is not unread
    assert by_id[team.pk]["last_message"]["seq"] == 4
    assert by_id[with_tester.pk]["unread_count"] == 1  # the greeting
    assert by_id[quiet.pk]["unread_count"] == 0 and by_id[quiet.pk]["last_message"] is None

    bobs = {c["id"]: c for c in api_client_for(bob).get(CONVERSATIONS).json()}
    assert bobs[team.pk]["unread_count"] == 1 and bobs[team.pk]["read_seq"] == 0

    post(alice, with_tester)
    assert [c["id"] for c in api.get(CONVERSATIONS).json()] == [with_tester.pk, quiet.pk, team.pk]


def test_conversation_detail_is_for_members_only(api, api_client_for, make_user, team):
    detail = api.get(conversation_url(team.pk))
    assert detail.status_code == 200, detail.content
    assert detail.json()["id"] == team.pk and detail.json()["title"] == "Team"

    outsider = api_client_for(make_user())
    hidden = assert_error(outsider.get(conversation_url(team.pk)), 404, "not_found")
    missing = assert_error(outsider.get(conversation_url(team.pk + 1000)), 404, "not_found")
    assert hidden == missing  # not even whether it exists
    assert "Team" not in json.dumps(hidden)


# --- History


@pytest.fixture
def ten(alice, team):
    """`team` holding seqs 1..10."""
    fill(team, alice, 10)
    return team


@pytest.mark.parametrize(
    ("query", "seqs", "has_more"),
    [
        ("", range(1, 11), False),
        ("?limit=3", [8, 9, 10], True),
        ("?limit=10", range(1, 11), False),
        ("?before=5&limit=3", [2, 3, 4], True),
        ("?before=4&limit=3", [1, 2, 3], False),
        ("?before=1", [], False),
        ("?after=0&limit=2", [1, 2], True),
        ("?after=6&limit=3", [7, 8, 9], True),
        ("?after=7&limit=3", [8, 9, 10], False),
        ("?after=10", [], False),
        ("?after=2&before=6", [3, 4, 5], False),
        ("?after=2&before=9&limit=3", [3, 4, 5], True),
    ],
)
def test_history_pages(api, ten, query, seqs, has_more):
    response = api.get(messages_url(ten.pk) + query)
    assert response.status_code == 200, response.content
    page = response.json()
    assert [m["seq"] for m in page["results"]] == list(seqs)
    assert page["has_more"] is has_more


def test_history_limit_defaults_to_50_and_goes_up_to_200(api, alice, team):
    fill(team, alice, 201)
    default = api.get(messages_url(team.pk)).json()
    assert [m["seq"] for m in default["results"]] == list(range(152, 202))
    assert default["has_more"] is True
    most = api.get(messages_url(team.pk) + "?limit=200").json()
    assert [m["seq"] for m in most["results"]] == list(range(2, 202))
    assert most["has_more"] is True
    assert_error(api.get(messages_url(team.pk) + "?limit=201"), 400, "bad_request")


@pytest.mark.parametrize(
    "query",
    [
        "?limit=201",
        "?limit=0",
        "?limit=-1",
        "?limit=ten",
        "?before=-1",
        "?after=-5",
        "?before=1.5",
        "?after=abc",
    ],
)
def test_history_rejects_bad_parameters(api, ten, query):
    assert_error(api.get(messages_url(ten.pk) + query), 400, "bad_request")


def test_history_is_for_members_only(api_client_for, make_user, ten):
    outsider = api_client_for(make_user())
    body = assert_error(outsider.get(messages_url(ten.pk)), 404, "not_found")
    assert "results" not in body


# --- Sending


def test_send_is_idempotent_on_client_id_per_sender(api, api_client_for, alice, bob, team):
    first = api.post(messages_url(team.pk), {"client_id": "c1", "text": "hello"}, format="json")
    assert first.status_code == 201, first.content
    message = first.json()
    assert message["seq"] == 1 and message["client_id"] == "c1" and message["text"] == "hello"
    assert message["sender"] == {"type": "user", "id": alice.pk, "name": "alice", "avatar": None}

    retry = api.post(messages_url(team.pk), {"client_id": "c1", "text": "hello"}, format="json")
    assert retry.status_code == 200, retry.content
    assert retry.json() == message
    team.refresh_from_db()
    assert team.last_seq == 1 and message_count() == 1

    # client_ids are per sender: bob's "c1" is a message of its own.
    bobs = api_client_for(bob).post(
        messages_url(team.pk), {"client_id": "c1", "text": "hi"}, format="json"
    )
    assert bobs.status_code == 201, bobs.content
    assert bobs.json()["seq"] == 2


def test_text_round_trips_byte_for_byte_up_to_4000_chars(api, team):
    text = "שלום\u200f 👩\u200d💻 \u0301é <b>"
    sent = api.post(messages_url(team.pk), {"client_id": "rt", "text": text}, format="json")
    assert sent.status_code == 201, sent.content
    assert sent.json()["text"] == text
    assert Message.objects.get(client_id="rt").text == text
    assert api.get(messages_url(team.pk)).json()["results"][0]["text"] == text
    longest = api.post(
        messages_url(team.pk), {"client_id": "max", "text": "x" * 4000}, format="json"
    )
    assert longest.status_code == 201, longest.content


@pytest.mark.parametrize(
    "payload",
    [
        {"client_id": "c1", "text": "x" * 4001},
        {"client_id": "c1", "text": "nul\x00here"},
        {"client_id": "c1", "text": ""},
        {"client_id": "c1", "text": " \n\t"},
        {"client_id": "c1"},
        {"text": "no client_id"},
        {"client_id": "", "text": "hi"},
        {"client_id": "x" * 65, "text": "hi"},
        {"client_id": "c1", "text": "hi", "kind": "sticker"},
        {"client_id": "c1", "text": "hi", "reply_to": 10**9},
    ],
    ids=[
        "too-long",
        "nul",
        "empty",
        "blank",
        "no-text",
        "no-client-id",
        "empty-client-id",
        "long-client-id",
        "bad-kind",
        "foreign-reply-to",
    ],
)
def test_bad_send_is_400_and_stores_nothing(api, team, payload):
    assert_error(api.post(messages_url(team.pk), payload, format="json"), 400, "bad_request")
    team.refresh_from_db()
    assert message_count() == 0
    assert team.last_seq == 0 and team.last_message_at is None


def test_send_by_a_non_member_is_404_and_stores_nothing(api_client_for, make_user, team):
    outsider = api_client_for(make_user())
    response = outsider.post(
        messages_url(team.pk), {"client_id": "c1", "text": "hi"}, format="json"
    )
    assert_error(response, 404, "not_found")
    team.refresh_from_db()
    assert message_count() == 0 and team.last_seq == 0


async def _next_of_type(ws: WebsocketCommunicator, frame_type: str) -> dict:
    while True:
        frame = await ws.receive_json_from(timeout=WS_TIMEOUT)
        if frame["type"] == frame_type:
            return frame


@pytest.mark.django_db(transaction=True)
async def test_rest_send_is_broadcast_once_to_joined_sockets(api_client_for, make_user):
    alice, bob = [await database_sync_to_async(make_user)(name) for name in ("alice", "bob")]
    team = await database_sync_to_async(make_group)(alice, bob)
    # A bare channel in the conversation's group sees the fan-out itself, which the
    # sockets' seq cursor would otherwise hide if a retry were broadcast again.
    layer = get_channel_layer()
    listener = await layer.new_channel()
    await layer.group_add(conversation_group(team.pk), listener)
    async with ws_session(bob) as (ws, _):
        await ws.send_json_to({"type": "conversation:join", "conversation": team.pk})
        assert (await _next_of_type(ws, "conversation:joined"))["conversation"]["id"] == team.pk

        send = database_sync_to_async(api_client_for(alice).post)
        payload = {"client_id": "c1", "text": "over REST"}
        sent = await send(messages_url(team.pk), payload, format="json")
        assert sent.status_code == 201, sent.content
        received = await _next_of_type(ws, "message:receive")
        assert received["message"]["id"] == sent.json()["id"]
        assert received["message"] == sent.json()

        retry = await send(messages_url(team.pk), payload, format="json")
        assert retry.status_code == 200, retry.content
        assert await ws.receive_nothing(timeout=0.5)  # a retry is not broadcast again
    event = await asyncio.wait_for(layer.receive(listener), WS_TIMEOUT)
    assert event["seq"] == sent.json()["seq"]
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(layer.receive(listener), 0.5)
    await layer.group_discard(conversation_group(team.pk), listener)


# --- Query counts


def _conversations_for(alice: User, bob: User, count: int) -> None:
    """Alternately a character conversation (its greeting last) and a group whose
    last message is bob's."""
    existing = Membership.objects.filter(user=alice).count()
    for i in range(existing, existing + count):
        if i % 2 == 0:
            Character.objects.create(slug=f"c{i}", name=f"C{i}", persona=".", greeting="Hi!")
            services.conversation_open_with_character(user=alice, slug=f"c{i}")
        else:
            post(bob, make_group(alice, bob, title=f"G{i}"))


def test_conversation_list_query_count_does_not_grow_with_conversations(api, alice, bob):
    _conversations_for(alice, bob, 1)
    one = query_count(api, CONVERSATIONS)
    _conversations_for(alice, bob, 1)
    two = query_count(api, CONVERSATIONS)
    _conversations_for(alice, bob, 8)
    ten = query_count(api, CONVERSATIONS)
    assert len(api.get(CONVERSATIONS).json()) == 10
    assert one == two == ten


def test_history_query_count_does_not_grow_with_page_size(api, alice, bob, character):
    conversation, _ = services.conversation_open_with_character(user=alice, slug="tester")
    fill(conversation, alice, 30)
    team = make_group(alice, bob)
    post(alice, team, 15)
    post(bob, team, 15)
    for conv in (conversation, team):
        small = query_count(api, messages_url(conv.pk) + "?limit=1")
        large = query_count(api, messages_url(conv.pk) + "?limit=31")
        assert small == large


# --- Schema and docs

DOCUMENTED = {
    REGISTER: {"post"},
    TOKEN: {"post"},
    REFRESH: {"post"},
    WS_TICKET: {"post"},
    ME: {"get"},
    CHARACTERS: {"get"},
    "/api/characters/{slug}/": {"get"},
    CONVERSATIONS: {"get", "post"},
    "/api/conversations/{conversation_id}/": {"get"},
    "/api/conversations/{conversation_id}/messages/": {"get", "post"},
}


@pytest.mark.parametrize(
    "how",
    [
        {"path": "/api/schema/?format=json"},
        {"path": "/api/schema/", "HTTP_ACCEPT": "application/vnd.oai.openapi+json"},
    ],
)
def test_schema_is_openapi_3_with_every_endpoint(anon, how):
    response = anon.get(**how)
    assert response.status_code == 200, response.content
    schema = response.json()
    assert schema["openapi"].startswith("3.")
    for path, methods in DOCUMENTED.items():
        assert methods <= set(schema["paths"].get(path, {})), path
    history = schema["paths"]["/api/conversations/{conversation_id}/messages/"]
    assert {"before", "after", "limit"} <= {p["name"] for p in history["get"]["parameters"]}
    assert {"200", "201"} <= set(history["post"]["responses"])
    assert {"200", "201"} <= set(schema["paths"][CONVERSATIONS]["post"]["responses"])


def test_schema_generates_without_warnings_or_errors(capsys):
    GENERATOR_STATS.reset()
    call_command("spectacular", "--fail-on-warn", "--validate", "--file", os.devnull)
    assert not GENERATOR_STATS, capsys.readouterr().err


def test_docs_page_is_served(anon):
    response = anon.get("/api/docs/")
    assert response.status_code == 200
    assert b"/api/schema/" in response.content
