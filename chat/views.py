from django.contrib.auth.decorators import login_required
from django.http import Http404
from django.shortcuts import render

from characters.llm import get_provider
from characters.selectors import character_get_public, character_list_public


def home(request):
    return render(request, "chat/home.html", {"characters": character_list_public()})


@login_required
def chat_with_character(request, slug: str):
    character = character_get_public(slug=slug)
    if character is None:
        raise Http404("No such character.")
    offline = get_provider().offline
    return render(request, "chat/chat.html", {"character": character, "offline": offline})
