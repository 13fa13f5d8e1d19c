"""The server-rendered pages through Django's test client on real PostgreSQL: sign-up
(the same service and password validators as the API), who may see which page, the
snapshot the chat page embeds, and what makes the pages safe by construction (CSP, no
inline script, CSRF on every form, the session cookie). The browser side is in
tests/e2e/."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser

import pytest
from django.conf import settings
from django.test import Client

from accounts.models import User
from chat import services
from chat.models import Conversation, Message

pytestmark = pytest.mark.django_db

STRONG = "a-Much-Better-passphrase-9"


@pytest.fixture
def browser() -> Client:
    return Client(enforce_csrf_checks=True)


def logged_in(user) -> Client:
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    return client


def csrf_post(client: Client, path: str, data: dict, **extra):
    """POST as a browser does: the token from the form's page (cookie + field)."""
    page = client.get(path)
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.content.decode())
    assert token, "the form carries no CSRF token"
    return client.post(path, {**data, "csrfmiddlewaretoken": token.group(1)}, **extra)


class _Scripts(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.scripts: list[dict] = []
        self.forms: list[dict] = []
        self.handlers: list[str] = []
        self.styles = 0
        self._form: dict | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.handlers += [name for name, _ in attrs if name.startswith("on")]
        if "style" in a:
            self.styles += 1
        if tag == "script":
            self.scripts.append(a)
        elif tag == "style":
            self.styles += 1
        elif tag == "form":
            self._form = {"method": (a.get("method") or "get").lower(), "csrf": False}
            self.forms.append(self._form)
        elif tag == "input" and self._form is not None and a.get("name") == "csrfmiddlewaretoken":
            self._form["csrf"] = True

    def handle_endtag(self, tag):
        if tag == "form":
            self._form = None


def assert_safe_page(response) -> None:
    """A strict CSP, no inline script or style, no event handler attribute, and a CSRF
    token in every form that posts."""
    assert response.status_code == 200, response.content[:500]
    csp = response["Content-Security-Policy"]
    directives = dict(part.strip().split(" ", 1) for part in csp.split(";"))
    assert directives["script-src"] == "'self'"
    assert directives["style-src"] == "'self'"
    assert directives["img-src"] == "'self' data: blob:"
    assert directives["object-src"] == "'none'"
    assert directives["frame-ancestors"] == "'none'"
    assert re.fullmatch(r"'self' ws://testserver", directives["connect-src"])
    parsed = _Scripts()
    parsed.feed(response.content.decode())
    for script in parsed.scripts:
        assert script.get("src") or script.get("type") == "application/json", script
    assert parsed.handlers == [] and parsed.styles == 0
    for form in parsed.forms:
        if form["method"] == "post":
            assert form["csrf"], form


# --- Sign-up, log-in, log-out


def test_signup_creates_the_account_and_logs_in(browser):
    response = csrf_post(
        browser,
        "/accounts/signup/",
        {
            "username": "newbie",
            "display_name": "New Person",
            "email": "",
            "password1": STRONG,
            "password2": STRONG,
            "next": "/conversations/",
        },
    )
    assert response.status_code == 302 and response["Location"] == "/conversations/"
    user = User.objects.get(username="newbie")
    assert user.display_name == "New Person" and user.check_password(STRONG)
    assert browser.get("/conversations/").status_code == 200  # logged in
    cookie = browser.cookies[settings.SESSION_COOKIE_NAME]
    assert cookie["httponly"] is True and cookie["samesite"] == "Lax"


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        ({"password1": "12345678", "password2": "12345678"}, "password1", "too common"),
        ({"password1": "newbie-1", "password2": "newbie-1"}, "password1", "too similar"),
        ({"password1": STRONG, "password2": STRONG + "x"}, "password2", "differ"),
        ({"username": "bad name!"}, "username", "letters, digits"),
        ({"username": "Taken"}, "username", "taken"),
        ({"email": "not-an-email"}, "email", "valid email"),
    ],
)
def test_signup_refuses_bad_input_and_creates_nothing(browser, make_user, fields, field, message):
    make_user("taken")
    data = {"username": "newbie", "password1": STRONG, "password2": STRONG, **fields}
    response = csrf_post(browser, "/accounts/signup/", data)
    assert response.status_code == 200
    errors = response.context["form"].errors
    assert any(message in e.lower() for e in errors[field]), errors
    assert User.objects.count() == 1
    assert settings.SESSION_COOKIE_NAME not in browser.cookies


def test_signup_ignores_a_foreign_next(browser):
    data = {"username": "newbie", "password1": STRONG, "password2": STRONG}
    response = csrf_post(
        browser, "/accounts/signup/", {**data, "next": "https://evil.example/phish"}
    )
    assert response.status_code == 302 and response["Location"] == "/"


def test_signup_without_csrf_token_is_refused(browser):
    data = {"username": "newbie", "password1": STRONG, "password2": STRONG}
    assert browser.post("/accounts/signup/", data).status_code == 403
    assert not User.objects.exists()


def test_log_out_is_a_post_with_csrf(make_user):
    client = logged_in(make_user("alice"))
    home = client.get("/")
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', home.content.decode())
    assert client.post("/accounts/logout/").status_code == 403  # no token: refused
    assert (
        client.post("/accounts/logout/", {"csrfmiddlewaretoken": token.group(1)}).status_code == 302
    )
    assert client.get("/conversations/").status_code == 302


# --- Who sees what


@pytest.mark.parametrize("path", ["/conversations/", "/chat/tester/", "/chat/c/1/"])
def test_pages_need_a_login(browser, character, path):
    response = browser.get(path)
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/?next=")


def test_chat_page_with_a_character_opens_the_conversation_once(make_user, character):
    client = logged_in(user := make_user("alice"))
    first = client.get("/chat/tester/")
    second = client.get("/chat/tester/")
    assert first.status_code == second.status_code == 200
    conversation = Conversation.objects.get(created_by=user, character=character)
    assert list(conversation.messages.values_list("seq", "text")) == [(1, character.greeting)]
    snapshot = first.context["initial"]
    assert snapshot["joined"]["conversation"]["id"] == conversation.pk
    assert snapshot["joined"]["messages"][0]["text"] == character.greeting
    assert snapshot["me"] == {"id": user.pk, "username": "alice", "name": "alice"}
    assert snapshot["limits"] == {"text_chars": settings.PARLEY_MAX_TEXT_CHARS}


def test_unknown_character_is_404(make_user):
    assert logged_in(make_user()).get("/chat/nobody-here/").status_code == 404


def test_a_conversation_page_is_for_members_only(make_user):
    alice, bob, eve = make_user("alice"), make_user("bob"), make_user("eve")
    group = services.conversation_create_group(
        creator=alice, title="Secret", member_usernames=["bob"]
    )
    services.message_post(user=alice, conversation_id=group.pk, client_id="c1", text="psst")
    page = logged_in(bob).get(f"/chat/c/{group.pk}/")
    assert page.status_code == 200
    assert page.context["initial"]["joined"]["messages"][0]["text"] == "psst"
    # Bob's view of Alice's markers, for the ticks.
    receipts = page.context["initial"]["receipts"]
    assert [r["user"]["id"] for r in receipts] == [alice.pk]
    # Eve learns nothing: the same 404 as for a conversation that does not exist.
    hidden = logged_in(eve).get(f"/chat/c/{group.pk}/")
    missing = logged_in(eve).get(f"/chat/c/{group.pk + 1000}/")
    assert hidden.status_code == missing.status_code == 404
    assert b"psst" not in hidden.content and b"Secret" not in hidden.content


def test_conversation_list_shows_last_message_and_unread(make_user):
    alice, bob = make_user("alice"), make_user("bob", display_name="Bob")
    group = services.conversation_create_group(
        creator=alice, title="Plans", member_usernames=["bob"]
    )
    for n in range(3):
        services.message_post(
            user=bob, conversation_id=group.pk, client_id=f"b{n}", text=f"**hi** {n}"
        )
    page = logged_in(alice).get("/conversations/")
    html = page.content.decode()
    assert "Plans" in html and "Bob: hi 2" in html  # markup stripped from the preview
    assert 'aria-label="3 unread"' in html
    assert_safe_page(page)


def test_new_group_form_creates_the_group(make_user):
    alice = logged_in(make_user("alice"))
    make_user("bob")
    page = alice.get("/conversations/")
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.content.decode()).group(1)
    response = alice.post(
        "/conversations/new/", {"title": "Team", "members": "bob,", "csrfmiddlewaretoken": token}
    )
    group = Conversation.objects.get(title="Team")
    assert response.status_code == 302 and response["Location"] == f"/chat/c/{group.pk}/"
    assert sorted(group.memberships.values_list("user__username", flat=True)) == ["alice", "bob"]

    refused = alice.post(
        "/conversations/new/",
        {"title": "Ghosts", "members": "casper", "csrfmiddlewaretoken": token},
    )
    assert refused.status_code == 400
    assert b"Unknown users: casper." in refused.content
    assert not Conversation.objects.filter(title="Ghosts").exists()


# --- Safe by construction


def test_every_page_is_safe(browser, make_user, character):
    for path in ["/", "/accounts/login/", "/accounts/signup/"]:
        assert_safe_page(browser.get(path))
    client = logged_in(make_user("alice"))
    for path in ["/", "/conversations/", "/chat/tester/", "/upgrade/"]:
        assert_safe_page(client.get(path))


def test_the_snapshot_cannot_break_out_of_its_script_tag(make_user, character):
    user = make_user("alice")
    client = logged_in(user)
    client.get("/chat/tester/")
    conversation = Conversation.objects.get(created_by=user)
    evil = "</script><script>alert(1)</script><!--"
    services.message_post(user=user, conversation_id=conversation.pk, client_id="x", text=evil)
    page = client.get("/chat/tester/")
    html = page.content.decode()
    assert "<script>alert(1)" not in html
    data = re.search(
        r'<script id="chat-initial" type="application/json">(.*?)</script>', html, re.S
    ).group(1)
    texts = [m["text"] for m in json.loads(data)["joined"]["messages"]]
    assert evil in texts  # intact, only escaped
    assert_safe_page(page)


def test_markdown_images_never_reach_the_html(make_user, character):
    user = make_user("alice")
    conversation, _ = services.conversation_open_with_character(user=user, slug=character.slug)
    text = '![x](https://evil.example/leak.png?q=1) <img src="https://evil.example/a.png"> ok'
    services.message_post(user=user, conversation_id=conversation.pk, client_id="img", text=text)
    html = Message.objects.get(client_id="img").html
    assert "<img" not in html and "evil.example/leak" not in html, html


def test_the_session_cookie_is_httponly_and_samesite():
    assert settings.SESSION_COOKIE_HTTPONLY is True
    assert settings.SESSION_COOKIE_SAMESITE in {"Lax", "Strict"}
    assert settings.CSRF_COOKIE_SAMESITE in {"Lax", "Strict"}
