"""Data for the end-to-end tests, made in the server's own database by a separate
Django process: `python -m tests.e2e.seed` prints what it made as JSON.

- the demo characters (seed_demo), and "Quill", whose free-plan text limit is 5 a day
  (the usage bar and the upgrade prompt are tested against it);
- people with passwords, logged in through the real form by the tests;
- a group whose history is longer than two pages (infinite scroll);
- "Night shift", Alice and Bob's group for the offline tests.
"""

from __future__ import annotations

import json
import os
import sys

PASSWORD = "e2e-Correct-Horse-42"
PEOPLE = {
    "alice": "Alice",
    "bob": "Bob",
    "carol": "Carol",
    "dave": "Dave",
    "sam": "Sam Rivera",
    "eve": "Eve",  # deactivated by a test
}
# A group for the screenshots of the conversation list, with a little history.
WEEKEND = [
    ("alice", "Anyone up for the coast on Saturday? 🌊"),
    ("bob", "Count me in. I'll bring the **good** coffee."),
    ("sam", "Yes! Leaving at 9?"),
    ("alice", "9 works. Bob, can you drive?"),
    ("bob", "Sure, I'll pick you both up."),
]
HISTORY_MESSAGES = 130
QUOTA_CHARACTER = "quill"
QUOTA_TEXT_LIMIT = 5


def seed() -> dict:
    from django.core.management import call_command

    from accounts.models import User
    from characters.models import Character
    from chat import services
    from usage.models import CharacterLimit, Plan

    call_command("seed_demo", verbosity=0)
    users = {
        name: User.objects.create_user(name, password=PASSWORD, display_name=display)
        for name, display in PEOPLE.items()
    }
    quill = Character.objects.create(
        slug=QUOTA_CHARACTER,
        name="Quill",
        tagline="A poet who counts every word.",
        persona="You are Quill, a terse poet.",
        greeting="Quill here. Be brief: I count.",
    )
    CharacterLimit.objects.create(
        character=quill, plan=Plan.objects.get(is_default=True), kind="text", limit=QUOTA_TEXT_LIMIT
    )
    history = services.conversation_create_group(
        creator=users["carol"], title="Book club", member_usernames=["dave"]
    )
    for n in range(1, HISTORY_MESSAGES + 1):
        services.message_post(
            user=users["carol" if n % 2 else "dave"],
            conversation_id=history.pk,
            client_id=f"history-{n}",
            text=f"History message number {n}",
        )
    night_shift = services.conversation_create_group(
        creator=users["alice"], title="Night shift", member_usernames=["bob"]
    )
    weekend = services.conversation_create_group(
        creator=users["alice"], title="Weekend plans", member_usernames=["bob", "sam"]
    )
    for n, (who, text) in enumerate(WEEKEND, 1):
        services.message_post(
            user=users[who], conversation_id=weekend.pk, client_id=f"weekend-{n}", text=text
        )
    return {
        "users": {name: user.pk for name, user in users.items()},
        "history": history.pk,
        "night_shift": night_shift.pk,
    }


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    command = sys.argv[1] if len(sys.argv) > 1 else "seed"
    if command != "seed":
        raise SystemExit(f"unknown command {command!r}")
    print(json.dumps(seed()))


if __name__ == "__main__":
    main()
