"""Server-rendered pages. Thin: each calls the same services and selectors as the
websocket and REST, and hands the typed objects to a template; the chat page's
client (static/js/chat/) takes over from the snapshot embedded in the page."""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from characters.llm import get_provider
from characters.selectors import (
    character_get_public,
    character_list_public,
    characters_by_slug,
)
from chat import presence, selectors, services
from chat.events import ConversationOut
from chat.forms import GroupForm
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
def conversations(request: HttpRequest, group_form: GroupForm | None = None) -> HttpResponse:
    rows = selectors.conversation_list(user_id=request.user.pk)
    characters = characters_by_slug(slugs={c.character for c in rows if c.character})
    people = {m.id for c in rows if c.kind == "group" for m in c.members} - {request.user.pk}
    states = presence.tracker.store().snapshot(sorted(people)) if people else {}
    return render(
        request,
        "chat/conversations.html",
        {
            "rows": [
                {
                    "conversation": c,
                    "character": characters.get(c.character or ""),
                    "presence": _group_presence(c, states, me=request.user.pk),
                }
                for c in rows
            ],
            "group_form": group_form or GroupForm(),
        },
        status=400 if group_form is not None else 200,
    )


def _group_presence(conversation: ConversationOut, states: dict, *, me: int) -> str:
    """A group's dot: online if anyone else is, else away if anyone is, else offline."""
    found = {states[m.id][0] for m in conversation.members if m.id != me and m.id in states}
    return next((s for s in ("online", "away") if s in found), "offline")


@login_required
@require_POST
def conversation_new(request: HttpRequest) -> HttpResponse:
    """Create a group from the conversation list's form, then open it."""
    form = GroupForm(request.POST)
    if form.is_valid():
        try:
            conversation = services.conversation_create_group(
                creator=request.user,
                title=form.cleaned_data["title"],
                member_usernames=form.cleaned_data["members"],
            )
        except ApplicationError as error:
            form.add_error(None, error.message)
        else:
            return redirect("chat-conversation", conversation_id=conversation.pk)
    return conversations(request, group_form=form)


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
    character = (
        character_get_public(slug=conversation.character) if conversation.character else None
    )
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
