#!/usr/bin/env python3
"""Create the benchmark's users and two-person conversations, and write their credentials.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/parley_bench SECRET_KEY=... \
        .venv/bin/python bench/setup_data.py --users 5000 --conversations 2500 --out bench/out

Run it with the same DATABASE_URL and SECRET_KEY as the server (the JWTs are signed
with SECRET_KEY). Writes:

- `tokens.txt`: one access JWT per line (lifetime --token-hours, default 2 h); line
  `2*r + k` is member `k` (0 or 1) of conversation `r`;
- `conversations.txt`: one conversation id per line, line `r` is conversation `r`.

Users are `bench-NNNNN` with an unusable password (no hashing cost); conversations are
`group` conversations titled `bench-NNNNN` with exactly two members. Earlier bench data
(users and conversations with the `bench-` prefix) is deleted first, messages included.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MEMBERS = 2  # two-person conversations


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--users", type=int, default=5000)
    ap.add_argument("--conversations", type=int, default=2500)
    ap.add_argument("--token-hours", type=float, default=2.0)
    ap.add_argument("--out", default=str(ROOT / "bench" / "out"))
    ap.add_argument("--prefix", default="bench-")
    ap.add_argument("--root", default=str(ROOT), help="the Parley source tree to import")
    a = ap.parse_args(argv)
    if a.users < MEMBERS * a.conversations:
        ap.error(f"--users must be at least {MEMBERS} x --conversations")

    sys.path.insert(0, a.root)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    from django.db import transaction
    from rest_framework_simplejwt.tokens import AccessToken

    from accounts.models import User
    from chat.models import Conversation, Membership

    t0 = time.monotonic()
    with transaction.atomic():
        Conversation.objects.filter(title__startswith=a.prefix).delete()
        User.objects.filter(username__startswith=a.prefix).delete()
        users = [
            User(username=f"{a.prefix}{i:05d}", display_name=f"Bench {i}") for i in range(a.users)
        ]
        for user in users:
            user.set_unusable_password()
        User.objects.bulk_create(users, batch_size=1000)
        users = list(User.objects.filter(username__startswith=a.prefix).order_by("username"))
        conversations = Conversation.objects.bulk_create(
            [
                Conversation(
                    kind=Conversation.Kind.GROUP,
                    title=f"{a.prefix}{r:05d}",
                    created_by=users[MEMBERS * r],
                )
                for r in range(a.conversations)
            ],
            batch_size=1000,
        )
        Membership.objects.bulk_create(
            [
                Membership(
                    user=users[MEMBERS * r + k],
                    conversation=conversation,
                    role=Membership.Role.OWNER if k == 0 else Membership.Role.MEMBER,
                )
                for r, conversation in enumerate(conversations)
                for k in range(MEMBERS)
            ],
            batch_size=2000,
        )

    lifetime = timedelta(hours=a.token_hours)
    tokens = []
    for user in users:
        token = AccessToken.for_user(user)
        token.set_exp(lifetime=lifetime)
        tokens.append(str(token))

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "tokens.txt").write_text("\n".join(tokens) + "\n")
    (out / "conversations.txt").write_text("\n".join(str(c.pk) for c in conversations) + "\n")
    print(
        f"setup_data: {len(users)} users, {len(conversations)} two-person conversations, "
        f"tokens valid {a.token_hours} h, written to {out} in {time.monotonic() - t0:.1f}s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
