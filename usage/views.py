"""The upgrade page: the plans, from the database (payment is out of scope: staff
switch a user's plan in the admin)."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone

from usage import selectors


def upgrade(request: HttpRequest) -> HttpResponse:
    now = timezone.now()
    held = (
        selectors.plan_held(user_id=request.user.pk, now=now)
        if request.user.is_authenticated
        else None
    )
    return render(
        request,
        "usage/upgrade.html",
        {"plans": selectors.plan_table(), "held": held},
    )
