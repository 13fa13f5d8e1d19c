"""Every object and frame the server sends, defined once.

Each schema forbids undeclared fields, so a payload bug fails loudly here instead of
reaching clients. Nothing else in the code base builds dicts for the socket: REST
responses dump the same objects (`MessageOut`, `ConversationOut`) that frames carry.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, RootModel

PROTOCOL_VERSION = 1


class Schema(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- Objects (contract section 4)


class UserRef(Schema):
    id: int
    name: str
    type: Literal["user", "character"]


class SessionUser(Schema):
    id: int
    username: str
    display_name: str


class Sender(Schema):
    type: Literal["user", "character", "system"]
    id: int | None
    name: str
    avatar: str | None = None


class AttachmentOut(Schema):
    id: int | str
    kind: Literal["audio", "image", "video", "file"]
    url: str
    content_type: str
    size: int
    duration_s: float | None = None
    width: int | None = None
    height: int | None = None
    waveform: list[float] | None = None
    # Added to the contract: the uploader's file name (cleaned; "" if none), for `file`.
    name: str = ""


class MessageOut(Schema):
    id: int
    conversation: int
    seq: int
    client_id: str | None
    sender: Sender
    role: Literal["user", "assistant", "system"]
    kind: Literal["text", "audio", "image", "video", "file", "system"]
    text: str
    html: str
    attachment: AttachmentOut | None = None
    reply_to: int | None = None
    reactions: dict[str, int] = Field(default_factory=dict)
    status: Literal["complete", "streaming", "stopped", "failed"]
    created_at: datetime
    edited_at: datetime | None = None
    deleted: bool = False
    metadata: dict[str, Any] = Field(default_factory=dict)


class MemberOut(Schema):
    id: int
    username: str
    display_name: str


class ConversationOut(Schema):
    id: int
    kind: Literal["character", "group"]
    title: str
    character: str | None
    members: list[MemberOut]
    # Added to the contract: the characters taking part (slugs); in a group they
    # answer when @mentioned or replied to.
    characters: list[str] = Field(default_factory=list)
    last_seq: int
    read_seq: int
    unread_count: int
    last_message: MessageOut | None = None


class ErrorOut(Schema):
    code: str
    message: str


class UsageOut(Schema):
    """A user's quota for one character and kind (usage app): `limit` and `remaining`
    are null when unlimited; `level` is `warning` from 80 % used, `exhausted` at it."""

    character: str
    kind: Literal["text", "audio", "media"]
    used: int
    limit: int | None
    remaining: int | None
    period: Literal["day", "month"]
    resets_at: datetime
    level: Literal["ok", "warning", "exhausted"]


class PresenceOut(Schema):
    """A user's presence (`presence:update` without its `type`). `last_seen`: when the
    status last changed (for `offline`, when the last socket went); null if never seen."""

    user: UserRef
    status: Literal["online", "away", "offline"]
    last_seen: datetime | None = None


# --- Frames (contract section 3)


class Frame(Schema):
    def to_text(self) -> str:
        return self.model_dump_json()


class SessionReady(Frame):
    type: Literal["session:ready"] = "session:ready"
    protocol: int = PROTOCOL_VERSION
    user: SessionUser
    heartbeat_s: int
    server_time: datetime


class Pong(Frame):
    type: Literal["pong"] = "pong"
    t: Any = None


class ConversationJoined(Frame):
    type: Literal["conversation:joined"] = "conversation:joined"
    conversation: ConversationOut
    last_seq: int
    read_seq: int
    messages: list[MessageOut]
    gap: bool
    usage: list[UsageOut] = Field(default_factory=list)
    # Added to the contract: the current presence of the other members, characters
    # included (always online), so a client needs no separate request after a join.
    presence: list[PresenceOut] = Field(default_factory=list)


class ConversationLeft(Frame):
    """Added to the contract: confirms `conversation:leave`."""

    type: Literal["conversation:left"] = "conversation:left"
    conversation: int


class MessageStatus(Frame):
    type: Literal["message:status"] = "message:status"
    conversation: int | None
    client_id: str | None
    message_id: int | None
    seq: int | None
    status: Literal["sent", "failed"]
    error: ErrorOut | None = None
    duplicate: bool = False


class MessageReceive(Frame):
    type: Literal["message:receive"] = "message:receive"
    message: MessageOut


class MessageUpdate(Frame):
    type: Literal["message:update"] = "message:update"
    message: MessageOut


class MessageStream(Frame):
    type: Literal["message:stream"] = "message:stream"
    conversation: int
    message_id: int
    seq: int
    delta: str
    offset: int


class TypingIndicator(Frame):
    type: Literal["typing:indicator"] = "typing:indicator"
    conversation: int
    user: UserRef
    is_typing: bool


class ReceiptUpdate(Frame):
    type: Literal["receipt:update"] = "receipt:update"
    conversation: int
    user: UserRef
    delivered_seq: int
    read_seq: int


class PresenceUpdate(Frame):
    type: Literal["presence:update"] = "presence:update"
    user: UserRef
    status: Literal["online", "away", "offline"]
    last_seen: datetime | None


class UsageUpdate(Frame, UsageOut):
    """A usage object as a frame, to every socket of the user: after each charge,
    and when staff change the user's plan or reset counters."""

    type: Literal["usage:update"] = "usage:update"


class ErrorFrame(Frame):
    type: Literal["error"] = "error"
    code: str
    message: str
    ref: str | None = None
    client_id: str | None = None


# --- REST envelopes around the same objects


class MessagePageOut(Schema):
    results: list[MessageOut]
    has_more: bool


class ConversationListOut(RootModel[list[ConversationOut]]):
    pass


class UsageListOut(RootModel[list[UsageOut]]):
    pass
