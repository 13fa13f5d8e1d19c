"""The sign-up form of the pages. It only collects and checks the fields a person
types; the account itself is made by `accounts.services.user_register`, the same
code path as `POST /api/auth/register/` (password validators included)."""

from __future__ import annotations

from django import forms
from django.contrib.auth.password_validation import password_validators_help_text_html

from accounts.models import User
from accounts.services import user_register
from config.errors import ApplicationError


class SignupForm(forms.Form):
    username = forms.RegexField(
        regex=r"^[\w.@+-]+\Z",
        max_length=150,
        help_text="Letters, digits and @ . + - _ only.",
        error_messages={"invalid": "Use letters, digits and @ . + - _ only."},
        widget=forms.TextInput(attrs={"autocomplete": "username", "autofocus": True}),
    )
    display_name = forms.CharField(
        max_length=80,
        required=False,
        help_text="What other people see.",
        widget=forms.TextInput(attrs={"autocomplete": "nickname"}),
    )
    email = forms.EmailField(
        required=False, widget=forms.EmailInput(attrs={"autocomplete": "email"})
    )
    password1 = forms.CharField(
        label="Password",
        strip=False,
        widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}),
        help_text=password_validators_help_text_html(),
    )
    password2 = forms.CharField(
        label="Password again",
        strip=False,
        widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}),
    )

    def clean(self):
        data = super().clean()
        if data.get("password1") and data.get("password1") != data.get("password2"):
            self.add_error("password2", "The two passwords differ.")
        return data

    def save(self) -> User | None:
        """The new user, or None with the service's complaints added to the form."""
        data = self.cleaned_data
        try:
            return user_register(
                username=data["username"],
                password=data["password1"],
                email=data.get("email", ""),
                display_name=data.get("display_name", ""),
            )
        except ApplicationError as error:
            fields = (error.details or {}).get("fields", {})
            for name, messages in fields.items():
                target = "password1" if name == "password" else name
                for message in messages:
                    self.add_error(target if target in self.fields else None, message)
            if not fields:
                self.add_error(None, error.message)
            return None
