"""Server-rendered pages. Thin: each calls the same services and selectors as the
websocket and REST, and hands the typed objects to a template; the chat page's
client (static/js/chat/) takes over from the snapshot embedded in the page."""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render

from characters.llm import get_provider
from characters.selectors import (
    character_get_public,
    character_list_public,
    characters_by_slug,
)
from chat import selectors, services
from chat.events import ConversationOut
from config.errors import ApplicationError


def home(request: HttpRequest) -> HttpResponse:
    characters = list(character_list_public())
    mine: dict[str, ConversationOut] = {}
    if request.user.is_authenticated:
        mine = {
            c.character: c
            for c in selectors.conversation_list(user_id=request.user.pk)
            if c.kind == "character"
        }
    cards = [{"character": c, "conversation": mine.get(c.slug)} for c in characters]
    return render(request, "chat/home.html", {"cards": cards})


@login_required
def conversations(request: HttpRequest) -> HttpResponse:
    rows = selectors.conversation_list(user_id=request.user.pk)
    characters = characters_by_slug(slugs={c.character for c in rows if c.character})
    return render(
        request,
        "chat/conversations.html",
        {
            "rows": [
                {"conversation": c, "character": characters.get(c.character or "")} for c in rows
            ]
        },
    )


@login_required
def chat_with_character(request: HttpRequest, slug: str) -> HttpResponse:
    if character_get_public(slug=slug) is None:
        raise Http404("No such character.")
    try:
        conversation, _ = services.conversation_open_with_character(user=request.user, slug=slug)
    except ApplicationError as error:
        raise Http404(error.message) from error
    return _chat_page(request, conversation.pk)


@login_required
def chat_conversation(request: HttpRequest, conversation_id: int) -> HttpResponse:
    return _chat_page(request, conversation_id)


def _chat_page(request: HttpRequest, conversation_id: int) -> HttpResponse:
    """The chat page, with the snapshot a socket would get on `conversation:join`
    embedded (so the first paint needs no round trip), and what the client needs to
    draw receipts: the other members' markers."""
    try:
        joined = services.conversation_join(user=request.user, conversation_id=conversation_id)
    except ApplicationError as error:
        # A non-member learns nothing, not even whether the conversation exists.
        raise Http404("No such conversation.") from error
    conversation = joined.conversation
    character = character_get_public(slug=conversation.character) if conversation.character else None
    user = request.user
    initial = {
        "me": {"id": user.pk, "username": user.username, "name": user.name},
        "joined": joined.model_dump(mode="json"),
        "receipts": selectors.receipts_of(conversation_id=conversation.id, exclude_user_id=user.pk),
        "limits": {"text_chars": settings.PARLEY_MAX_TEXT_CHARS},
    }
    return render(
        request,
        "chat/chat.html",
        {
            "conversation": conversation,
            "character": character,
            "others": [m for m in conversation.members if m.id != user.pk],
            "offline": get_provider().offline,
            "initial": initial,
        },
    )
