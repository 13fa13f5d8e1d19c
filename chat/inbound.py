"""Frames a client may send (contract section 2), validated by type.

Types are strict: `"conversation": "5"` is a `bad_request`, not a silent cast.
Unknown extra fields are ignored so that newer clients keep working.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    StrictStr,
    ValidationError,
    field_validator,
)

Id = Annotated[StrictInt, Field(ge=1, le=2**63 - 1)]
Seq = Annotated[StrictInt, Field(ge=0, le=2**63 - 1)]


class Inbound(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True, frozen=True)


MAX_ECHO_DEPTH = 16


def _depth(value: Any) -> int:
    """Nesting depth of decoded JSON, without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        deepest = max(deepest, level)
        if isinstance(item, dict):
            stack.extend((v, level + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, level + 1) for v in item)
    return deepest


class Ping(Inbound):
    type: Literal["ping"]
    t: Any = None

    @field_validator("t")
    @classmethod
    def _shallow(cls, value: Any) -> Any:
        # Echoed back as is: keep it shallow enough to serialize.
        if _depth(value) > MAX_ECHO_DEPTH:
            raise ValueError(f"nested deeper than {MAX_ECHO_DEPTH} levels")
        return value


class ConversationJoin(Inbound):
    type: Literal["conversation:join"]
    conversation: Id | None = None
    character: Annotated[StrictStr, Field(min_length=1, max_length=64)] | None = None
    since: Seq | None = None


class ConversationLeave(Inbound):
    type: Literal["conversation:leave"]
    conversation: Id


class MessageSend(Inbound):
    type: Literal["message:send"]
    conversation: Id
    client_id: Annotated[StrictStr, Field(min_length=1, max_length=64)]
    kind: Literal["text", "audio", "image", "video", "file"] = "text"
    text: StrictStr = ""
    attachment: Id | StrictStr | None = None
    reply_to: Id | None = None


class GenerationStop(Inbound):
    type: Literal["generation:stop"]
    conversation: Id


class Receipt(Inbound):
    """`message:delivered` / `message:read`: everything up to `seq` arrived / was read."""

    type: Literal["message:delivered", "message:read"]
    conversation: Id
    seq: Seq


class Typing(Inbound):
    type: Literal["typing:start", "typing:stop"]
    conversation: Id


class PresenceSet(Inbound):
    type: Literal["presence:set"]
    status: Literal["online", "away"]


INBOUND: dict[str, type[Inbound]] = {
    "ping": Ping,
    "conversation:join": ConversationJoin,
    "conversation:leave": ConversationLeave,
    "message:send": MessageSend,
    "generation:stop": GenerationStop,
    "message:delivered": Receipt,
    "message:read": Receipt,
    "typing:start": Typing,
    "typing:stop": Typing,
    "presence:set": PresenceSet,
}


def describe(error: ValidationError) -> str:
    """One readable line: which field is wrong and why."""
    parts = []
    for item in error.errors(include_url=False)[:3]:
        where = ".".join(str(p) for p in item["loc"]) or "frame"
        parts.append(f"{where}: {item['msg']}")
    return "; ".join(parts)
