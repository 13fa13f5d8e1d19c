from django.urls import path

from chat import views

urlpatterns = [
    path("", views.home, name="home"),
    path("conversations/", views.conversations, name="conversations"),
    path("conversations/new/", views.conversation_new, name="conversation-new"),
    path("chat/c/<int:conversation_id>/", views.chat_conversation, name="chat-conversation"),
    path("chat/<slug:slug>/", views.chat_with_character, name="chat-character"),
]
