"""Forms of the chat pages; the rules behind them live in chat.services."""

from __future__ import annotations

from django import forms


class GroupForm(forms.Form):
    title = forms.CharField(max_length=200, widget=forms.TextInput(attrs={"autocomplete": "off"}))
    members = forms.CharField(
        max_length=2000,
        help_text="Usernames, separated by commas or spaces.",
        widget=forms.TextInput(attrs={"autocomplete": "off", "placeholder": "alice, bob"}),
    )

    def clean_members(self) -> list[str]:
        names = [n for n in self.cleaned_data["members"].replace(",", " ").split() if n]
        if not names:
            raise forms.ValidationError("Name at least one member.")
        return names
