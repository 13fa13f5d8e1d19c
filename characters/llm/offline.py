"""The offline responder: Parley's default when no ANTHROPIC_API_KEY is set.

It makes no network call. Its replies are deterministic for a given character and
message (seeded by them), speak in the character's voice as far as the persona and
greeting allow (first person, the greeting's opening words, the character's name),
pick up the user's words, and stream word by word at a human-ish pace
(`PARLEY_OFFLINE_WORDS_PER_S`), so that the whole streaming path can be seen working
without a key.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import re
from collections.abc import AsyncIterator

from django.conf import settings

from .base import ReplyDone, ReplyRequest, ReplyUsage, TextDelta
from .tokens import MESSAGE_OVERHEAD_TOKENS, estimate_tokens

# Words that say nothing about what the user is talking about.
_STOPWORDS = """
a about after again all also am an and any are as at be because been before being
but by can could did do does doing don't for from had has have having he her here
hers him his how i i'm if in into is it it's its just let's like me more most my no
nor not now of off on once only or other our ours out over own really same she
should so some such than that that's the their theirs them then there these they
this those through to too under until up very was we were what when where which
while who whom why will with would you you're your yours yourself hi hello hey
please thanks thank okay ok yes yeah tell know think want talk say said something
anything thing things explain describe give show help
"""
STOPWORDS = frozenset(_STOPWORDS.split())

ACTIONS = (
    "leans in",
    "tilts their head",
    "smiles",
    "considers this for a moment",
    "raises an eyebrow",
    "laughs softly",
)

_FIRST_PERSON = (
    (re.compile(r"^you are\b", re.I), "I am"),
    (re.compile(r"^you're\b", re.I), "I'm"),
    (re.compile(r"^you have\b", re.I), "I have"),
    (re.compile(r"^you\b", re.I), "I"),
    (re.compile(r"\byourself\b", re.I), "myself"),
    (re.compile(r"\byours\b", re.I), "mine"),
    (re.compile(r"\byour\b", re.I), "my"),
)


def _sentences(text: str) -> list[str]:
    return [s.strip() for s in re.split(r"(?<=[.!?])\s+", " ".join(text.split())) if s.strip()]


def persona_line(persona: str) -> str:
    """The first persona sentence that reads well in the first person ("You are a
    pirate." -> "I am a pirate."), or "" when there is none."""
    for sentence in _sentences(persona)[:6]:
        if not re.match(r"you\b|you're\b", sentence, re.I) or len(sentence) > 160:
            continue
        line = sentence
        for pattern, replacement in _FIRST_PERSON:
            line = pattern.sub(replacement, line)
        if re.search(r"\byou\b", line, re.I):
            continue  # "you" as an object would come out wrong; try the next sentence
        return line if line[-1] in ".!?" else line + "."
    return ""


def greeting_opener(greeting: str) -> str:
    """A short exclamation from the greeting ("Ahoy there, matey!"), or ""."""
    sentences = _sentences(greeting)
    if not sentences:
        return ""
    first = re.split(r"(?<=[,!?—])\s", sentences[0])[0].strip()
    if len(first.split()) > 5 or "{{" in first:  # card placeholders like {{user}}
        return ""
    return first if first[-1] in ".!?," else first + "!"


def _last_words(request: ReplyRequest) -> str:
    """What the user just said, without a group label."""
    text = request.turns[-1].text if request.turns else ""
    text = text.split("\n\n")[-1].strip()
    if request.user_name and text.startswith(f"{request.user_name}: "):
        text = text[len(request.user_name) + 2 :]
    return " ".join(text.split())


def _topic(words: str) -> str:
    """The user's subject: the longest run of meaningful words ("the storm wall" ->
    "storm wall"), at most three of them."""
    runs: list[list[str]] = [[]]
    for raw in words.split():
        word = raw.strip(".,!?;:\"'()[]*_`").lower()
        if len(word) > 2 and word not in STOPWORDS and word.isascii():
            runs[-1].append(word)
        else:
            runs.append([])
        if raw[-1:] in ".,!?;:":
            runs.append([])  # a phrase does not cross punctuation
    phrases = [" ".join(run[:3]) for run in runs if run]
    return max(reversed(phrases), key=len) if phrases else ""


def _quote(words: str, limit: int = 10) -> str:
    cleaned = re.sub(r"[*_`#>\[\]]", "", words).strip(" \"'")
    parts = cleaned.split()
    return " ".join(parts[:limit]) + ("…" if len(parts) > limit else "")


def compose_reply(request: ReplyRequest) -> str:
    """The reply's full text: a few sentences, deterministic for the same input."""
    name = request.character_name
    words = _last_words(request)
    seed = hashlib.sha256(f"{name}\n{request.system}\n{len(request.turns)}\n{words}".encode())
    rng = random.Random(seed.digest())
    topic = _topic(words)  # "" when the user said nothing of substance ("hi")
    user = request.user_name
    quote = _quote(words)

    action = f"*{name} {rng.choice(ACTIONS)}.*" if name else "*A pause.*"
    opener = greeting_opener(request.greeting)
    openings = [action]
    if opener:
        openings.append(f"{opener} {action}")
    if user:
        openings.append(f"{action} Ah, {user}.")
    parts = [rng.choice(openings)]

    if not words:
        acknowledgements = ["You've gone quiet on me."]
    elif not topic:
        acknowledgements = [f'"{quote}" — and a fine day to you too.', "A quiet start, then."]
    elif words.endswith("?"):
        acknowledgements = [
            f'"{quote}" — that is a fair question.',
            f"You ask about **{topic}**? Let me think out loud.",
        ]
    else:
        acknowledgements = [
            f'"{quote}" — now that is worth talking about.',
            f"So it's **{topic}** on your mind.",
            f"You want to talk about **{topic}**? Gladly.",
        ]
    parts.append(rng.choice(acknowledgements))

    line = persona_line(request.system)
    if line:
        casual = line if line.startswith(("I ", "I'")) else line[0].lower() + line[1:]
        parts.append(rng.choice([line, f"You know me: {casual}"]))
    if topic:
        parts.append(
            rng.choice(
                [
                    f"{topic[0].upper()}{topic[1:]}, though — that is exactly my kind of thing.",
                    f"I have a few thoughts about {topic}, and you may not like all of them.",
                    f"Between us, there is more to {topic} than people think.",
                ]
            )
        )
        closings = [f"What makes you bring up {topic}?", "What would you do in my place?"]
    else:
        parts.append(rng.choice(["Something is on your mind; I can tell.", "Sit, stay a while."]))
        closings = ["So, what shall we talk about?", "What brings you here today?"]
    closings.append("Tell me more — what happened next?")
    if user:
        closings.append(f"Go on, {user}: where shall we take this?")
    parts.append(rng.choice(closings))
    return " ".join(parts)


class OfflineProvider:
    name = "offline"
    offline = True

    async def stream(self, request: ReplyRequest) -> AsyncIterator[TextDelta | ReplyDone]:
        words_per_s = float(settings.PARLEY_OFFLINE_WORDS_PER_S)
        delay = 1 / words_per_s if words_per_s > 0 else 0.0
        text = compose_reply(request)
        # A moment of "thinking" before the first word, like a model's time to first token.
        await asyncio.sleep(min(0.5, 3 * delay))
        sent = ""
        stop_reason = "end_turn"
        for word in re.findall(r"\S+\s*", text):
            if estimate_tokens(sent + word) > request.max_tokens:
                stop_reason = "max_tokens"
                break
            sent += word
            yield TextDelta(word)
            await asyncio.sleep(delay)  # also yields to the loop at "infinite" speed
        prompt = request.system + "".join(turn.text for turn in request.turns)
        yield ReplyDone(
            stop_reason=stop_reason,
            model="offline",
            usage=ReplyUsage(
                input_tokens=estimate_tokens(prompt)
                + MESSAGE_OVERHEAD_TOKENS * (len(request.turns) + 1),
                output_tokens=estimate_tokens(sent),
            ),
        )
