from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from accounts import api as accounts_api
from characters import api as characters_api
from chat import api as chat_api
from chat import api_attachments as chat_api_attachments
from chat import api_feedback as chat_api_feedback
from usage import api as usage_api

api = [
    path("auth/register/", accounts_api.RegisterView.as_view(), name="register"),
    path("auth/token/", accounts_api.TokenView.as_view(), name="token"),
    path("auth/token/refresh/", accounts_api.TokenRefresh.as_view(), name="token-refresh"),
    path("auth/logout/", accounts_api.LogoutView.as_view(), name="logout"),
    path("auth/ws-ticket/", accounts_api.WsTicketView.as_view(), name="ws-ticket"),
    path("me/", accounts_api.MeView.as_view(), name="me"),
    path("characters/", characters_api.CharacterList.as_view(), name="character-list"),
    # Before `characters/<slug>/`: "import" would otherwise read as a slug.
    path(
        "characters/import/",
        characters_api.CharacterCardImport.as_view(),
        name="character-import",
    ),
    path(
        "characters/<slug:slug>/card/",
        characters_api.CharacterCardExport.as_view(),
        name="character-card",
    ),
    path(
        "characters/<slug:slug>/", characters_api.CharacterDetail.as_view(), name="character-detail"
    ),
    path("conversations/", chat_api.ConversationListCreate.as_view(), name="conversation-list"),
    path(
        "conversations/<int:conversation_id>/",
        chat_api.ConversationDetail.as_view(),
        name="conversation-detail",
    ),
    path(
        "conversations/<int:conversation_id>/messages/",
        chat_api.ConversationMessages.as_view(),
        name="conversation-messages",
    ),
    path(
        "conversations/<int:conversation_id>/characters/",
        chat_api.ConversationCharacters.as_view(),
        name="conversation-characters",
    ),
    path(
        "conversations/<int:conversation_id>/read/",
        chat_api.ConversationRead.as_view(),
        name="conversation-read",
    ),
    path(
        "messages/<int:message_id>/feedback/",
        chat_api_feedback.MessageFeedback.as_view(),
        name="message-feedback",
    ),
    path("attachments/", chat_api_attachments.AttachmentUpload.as_view(), name="attachments"),
    path(
        "attachments/<int:attachment_id>/file/",
        chat_api_attachments.AttachmentFile.as_view(),
        name="attachment-file",
    ),
    path("usage/", usage_api.UsageView.as_view(), name="usage"),
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
]

# JSON errors under /api/ (config/api.py), Django's pages elsewhere.
handler404 = "config.api.not_found"
handler500 = "config.api.server_error"

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/", include(api)),
    path("accounts/", include("accounts.urls")),
    path("accounts/", include("django.contrib.auth.urls")),
    path("", include("usage.urls")),
    path("", include("chat.urls")),
]
