from django.urls import path

from chat import views

urlpatterns = [
    path("", views.home, name="home"),
    path("chat/<slug:slug>/", views.chat_with_character, name="chat-character"),
]
