from django.urls import path

from usage import views

urlpatterns = [
    path("upgrade/", views.upgrade, name="upgrade"),
]
