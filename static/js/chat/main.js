// The chat page: wires the snapshot embedded by the server, the websocket, the outbox
// and the widgets together. The wire format is docs/protocol.md.

import { Banner } from "./banner.js";
import { Composer } from "./composer.js";
import { History } from "./history.js";
import { setupViewer } from "./media.js";
import { Drafts, frameFor, Outbox } from "./outbox.js";
import { Receipts } from "./receipts.js";
import { MessageList } from "./render.js";
import { Connection } from "./socket.js";
import { TypingIndicator } from "./typing.js";
import { UsageBars } from "./usage.js";
import { upload } from "./util.js";

// Frames the client sends on its own: an older server that does not know them
// answers `unknown_type`, which is no reason to bother the user.
const BEST_EFFORT = new Set(["typing:start", "typing:stop", "message:delivered", "message:read", "presence:set", "ping", "generation:stop"]);
const SIGNALS_MS = 400; // delivered/read markers are coalesced to one frame per this

const root = document.querySelector(".chat");
const initial = JSON.parse(document.getElementById("chat-initial").textContent);
const me = initial.me;
const conversation = initial.joined.conversation;
const id = conversation.id;
const characters = conversation.characters && conversation.characters.length ? conversation.characters : [conversation.character].filter(Boolean);

const scroller = root.querySelector(".scroller");
const announcer = root.querySelector(".announcer");
const jump = root.querySelector(".jump-latest");
const stopButton = root.querySelector(".stop");
const quotaPrompt = root.querySelector(".quota-prompt");

const outbox = new Outbox(me.id);
const connection = new Connection();
const list = new MessageList(root.querySelector(".messages"), {
  me,
  kind: conversation.kind,
  onRetry: (clientId) => retry(clientId),
  onDiscard: (clientId) => discard(clientId),
});
const receipts = new Receipts({ me, members: conversation.members, characterOnly: conversation.kind === "character" });
const typing = new TypingIndicator(root.querySelector(".typing"));
const usage = new UsageBars(root.querySelector(".usage"), { characters });
const banner = new Banner(root.querySelector(".banner"), { onRetry: () => connection.reconnectNow() });

let lastSeq = 0; // the highest seq this page has (for `since` on a resume)
let joined = false; // the current socket has joined this conversation
let inFlight = new Set(); // client_ids sent on the current socket
let readSent = initial.joined.read_seq || 0;
let deliveredSent = readSent;
let signalTimer = 0;
let unseen = 0;
let sendError = null; // the last quota/ban error of a send, for the prompt
const baseTitle = document.title;

// --- Scrolling

function atBottom() {
  return scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight < 80;
}

function toBottom() {
  scroller.scrollTop = scroller.scrollHeight;
  jump.hidden = true;
}

function sticky(change) {
  const stick = atBottom();
  change();
  if (stick) toBottom();
  else jump.hidden = false;
}

jump.addEventListener("click", () => {
  toBottom();
  markRead();
});
// Whether the reader is at the newest message: kept there when the list's box
// shrinks (an upgrade prompt, a taller composer, an attachment preview).
let stuck = true;
new ResizeObserver(() => {
  if (stuck) toBottom();
}).observe(scroller);
scroller.addEventListener("scroll", () => {
  stuck = atBottom();
  if (stuck) {
    jump.hidden = true;
    markRead();
  }
});

function announce(text) {
  announcer.textContent = "";
  requestAnimationFrame(() => (announcer.textContent = text));
}

// --- Messages

function receive(message, { live = false } = {}) {
  if (message.conversation !== id) return;
  const mine = list.isMine(message);
  const { item, fresh } = list.upsert(message);
  if (mine && message.client_id) {
    outbox.remove(message.client_id);
    inFlight.delete(message.client_id);
  }
  lastSeq = Math.max(lastSeq, message.seq);
  if (receipts.characterReplied(message)) refreshTicks();
  else if (mine) list.setTick(item, receipts.stateOf(message.seq));
  if (fresh && live && !mine) {
    if (message.status !== "streaming") announce(`${message.sender.name}: ${message.text}`);
    if (document.visibilityState !== "visible") {
      unseen += 1;
      document.title = `(${unseen}) ${baseTitle}`;
    }
  }
  updateStop();
}

function receiveMany(messages, options) {
  sticky(() => messages.forEach((m) => receive(m, options)));
}

function updated(message) {
  if (message.conversation !== id) return;
  // A change to a message older than what is loaded: history brings it when scrolled to
  // (inserting it now would leave a hole in the list).
  const oldest = list.oldestSeq();
  if (!list.has(message.id) && oldest !== null && message.seq < oldest) return;
  const wasStreaming = list.streamingIds().includes(message.id);
  sticky(() => receive(message));
  if (wasStreaming && message.status !== "streaming") {
    announce(`${message.sender.name}: ${message.text}`);
  }
}

function refreshTicks() {
  for (const item of list.ownConfirmed()) list.setTick(item, receipts.stateOf(Number(item.dataset.seq)));
}

function updateStop() {
  const streaming = list.streamingIds().length > 0;
  stopButton.hidden = !streaming;
  root.classList.toggle("is-streaming", streaming);
}

stopButton.addEventListener("click", () => {
  connection.send({ type: "generation:stop", conversation: id });
  stopButton.disabled = true;
  setTimeout(() => (stopButton.disabled = false), 1500);
});

// --- Receipts this user sends

function othersNewest() {
  let newest = 0;
  for (const item of root.querySelectorAll(".messages > li.theirs[data-seq], .messages > li.msg-system[data-seq]")) {
    newest = Math.max(newest, Number(item.dataset.seq) || 0);
  }
  return newest;
}

function flushSignals() {
  signalTimer = 0;
  if (!joined) return;
  const newest = othersNewest();
  if (newest > deliveredSent) {
    deliveredSent = newest;
    connection.send({ type: "message:delivered", conversation: id, seq: newest });
  }
  const readable = document.visibilityState === "visible" && atBottom();
  const all = list.newestSeq();
  if (readable && all > readSent) {
    readSent = all;
    connection.send({ type: "message:read", conversation: id, seq: all });
  }
}

function markRead() {
  if (!signalTimer) signalTimer = setTimeout(flushSignals, SIGNALS_MS);
}

document.addEventListener("visibilitychange", () => {
  if (document.visibilityState === "visible") {
    unseen = 0;
    document.title = baseTitle;
    markRead();
  }
});

// --- Sending through the outbox

function trySend(entry) {
  if (!joined || inFlight.has(entry.client_id) || entry.state !== "queued") return;
  if (connection.send(frameFor(entry))) inFlight.add(entry.client_id);
}

function flushOutbox() {
  for (const entry of outbox.queued(id)) trySend(entry);
}

function retry(clientId) {
  const entry = outbox.retry(clientId);
  if (!entry) return;
  sendError = null;
  list.pending(entry);
  trySend(entry);
  refreshComposer();
}

function discard(clientId) {
  outbox.remove(clientId);
  list.dropPending(clientId);
  refreshComposer();
}

async function send({ text, file }) {
  let attachment = null;
  let kind = "text";
  if (file) {
    if (!connection.isOpen()) throw new Error("Attachments need a connection: try again when you're back online.");
    const form = new FormData();
    form.append("file", file.file, file.file.name);
    form.append("kind", file.kind);
    attachment = await upload("/api/attachments/", form, (f) => composer.progress(f));
    kind = (attachment && attachment.kind) || file.kind;
  }
  const entry = outbox.add({ conversation: id, text, kind, attachment });
  list.pending(entry);
  toBottom();
  trySend(entry);
  refreshComposer();
}

function statusOf(frame) {
  const entry = outbox.get(frame.client_id);
  if (!entry && frame.conversation !== id) return;
  inFlight.delete(frame.client_id);
  if (frame.status === "sent") {
    outbox.remove(frame.client_id);
    sticky(() => list.confirm(frame.client_id, frame.message_id, frame.seq));
    const item = list.item(frame.message_id);
    if (item) list.setTick(item, receipts.stateOf(frame.seq));
    sendError = null;
  } else if (entry) {
    outbox.fail(frame.client_id, frame.error);
    list.pending(outbox.get(frame.client_id));
    if (frame.error && ["quota_exceeded", "banned"].includes(frame.error.code)) sendError = frame.error;
  }
  refreshComposer();
}

function restorePending() {
  for (const entry of outbox.forConversation(id)) list.pending(entry);
}

outbox.addEventListener("change", () => {
  // Another tab queued or confirmed something: show what waits, drop what went.
  const waiting = new Set(outbox.forConversation(id).map((e) => e.client_id));
  for (const clientId of list.pendingIds()) if (!waiting.has(clientId)) list.dropPending(clientId);
  restorePending();
  refreshComposer();
});

// --- The composer and what may be sent

const composer = new Composer(root.querySelector(".composer"), {
  maxChars: initial.limits.text_chars,
  drafts: new Drafts(me.id, id),
  dropZone: root,
  onSend: send,
  onTyping: (isTyping) => {
    if (joined) connection.send({ type: isTyping ? "typing:start" : "typing:stop", conversation: id });
  },
});

function refreshComposer() {
  const state = connection.state;
  let blocked = null;
  if (state === "signed-out") blocked = "Your session has ended: log in again to send messages.";
  else if (state === "banned" || (sendError && sendError.code === "banned")) blocked = "This account cannot send messages.";
  else if (!connection.isOpen() && outbox.isFull()) {
    blocked = `You're offline and ${outbox.size} messages are already waiting to be sent. Wait for the connection to come back.`;
  }
  const caps = usage.capabilities();
  if (sendError && sendError.code === "quota_exceeded" && caps.text) {
    caps.text = false;
    caps.reasons.text = sendError.message;
  }
  caps.online = connection.isOpen();
  caps.explained = showQuotaPrompt(caps);
  composer.setCapabilities(caps);
  composer.setBlocked(blocked);
  banner.setPending(outbox.queued(id).length);
}

// At a limit: why, until when, and the way to more. Returns whether it is shown.
function showQuotaPrompt(caps) {
  const out = ["text", "audio", "media"].filter((kind) => caps[kind] === false);
  quotaPrompt.hidden = out.length === 0;
  if (!out.length) return false;
  const reasons = out.map((kind) => caps.reasons[kind]).filter(Boolean);
  quotaPrompt.querySelector(".quota-text").textContent = `${reasons.join(" ")} Upgrade for more, or come back then.`;
  return true;
}

usage.addEventListener("change", refreshComposer);

// --- The socket

connection.addEventListener("state", (event) => {
  const { state } = event.detail;
  if (state !== "open") {
    joined = false;
    inFlight = new Set();
    typing.clear();
  }
  banner.setState(event.detail);
  refreshComposer();
});

connection.addEventListener("ready", () => {
  // Resume: everything after the last seq we have. A reply still streaming is asked
  // for again, so that its text so far comes with it and the deltas stitch on.
  const streaming = list.streamingSeqs();
  const since = streaming.length ? Math.min(lastSeq, Math.min(...streaming) - 1) : lastSeq;
  connection.send({ type: "conversation:join", conversation: id, since });
});

const HANDLERS = {
  "conversation:joined": async (frame) => {
    if (frame.conversation.id !== id) return;
    joined = true;
    usage.setAll(frame.usage);
    (frame.presence || []).forEach((p) => setPresence(p.user.id, p.status, p.user.type));
    receiveMany(frame.messages, { live: true });
    if (frame.gap) {
      try {
        await history.fillForward(lastSeq);
      } catch {
        // The next resume will try again.
      }
    }
    flushOutbox();
    markRead();
    refreshComposer();
  },
  "message:receive": (frame) => {
    receiveMany([frame.message], { live: true });
    if (!list.isMine(frame.message)) markRead();
  },
  "message:update": (frame) => updated(frame.message),
  "message:stream": (frame) => {
    if (frame.conversation === id) sticky(() => list.stream(frame));
  },
  "message:status": statusOf,
  "typing:indicator": (frame) => {
    if (frame.conversation !== id) return;
    if (frame.user.type === "user" && frame.user.id === me.id) return;
    sticky(() => typing.set(frame.user, frame.is_typing));
  },
  "receipt:update": (frame) => {
    if (frame.conversation === id && receipts.update(frame.user, frame.delivered_seq, frame.read_seq)) refreshTicks();
  },
  "presence:update": (frame) => setPresence(frame.user.id, frame.status, frame.user.type),
  "usage:update": (frame) => {
    const { type: _type, ...object } = frame;
    usage.update(object);
  },
  error: (frame) => {
    if (BEST_EFFORT.has(frame.ref) || frame.ref === "message:send") return;
    if (frame.ref === "conversation:join") composer.flash(`Could not open this conversation: ${frame.message}`);
  },
};

connection.addEventListener("frame", (event) => {
  const handler = HANDLERS[event.detail.type];
  if (handler) handler(event.detail);
});

function setPresence(userId, status, type = "user") {
  if (type !== "user") return; // characters are always online
  for (const dot of root.querySelectorAll(`[data-presence-for~="${userId}"]`)) {
    dot.className = `presence presence-${status}`;
    dot.title = status[0].toUpperCase() + status.slice(1);
  }
}

// --- Start: draw the snapshot at once, then go live.

const history = new History({
  conversation: id,
  scroller,
  box: root.querySelector(".history"),
  list,
  onMessages: (messages) => messages.forEach((m) => receive(m)),
});
for (const marker of initial.receipts || []) receipts.update(marker.user, marker.delivered_seq, marker.read_seq);
usage.setAll(initial.joined.usage);
(initial.joined.presence || []).forEach((p) => setPresence(p.user.id, p.status, p.user.type));
initial.joined.messages.forEach((m) => receive(m));
lastSeq = Math.max(lastSeq, initial.joined.last_seq || 0);
insertUnreadDivider(initial.joined.read_seq);
restorePending();
history.refresh();
refreshTicks();
toBottom();
setupViewer();
refreshComposer();
connection.start();

function insertUnreadDivider(readSeq) {
  const first = Array.from(root.querySelectorAll(".messages > li.theirs[data-seq]")).find((li) => Number(li.dataset.seq) > readSeq);
  if (!first || !readSeq) return;
  const divider = document.createElement("li");
  divider.className = "unread-divider";
  divider.dataset.seq = String(Number(first.dataset.seq) - 0.5);
  divider.textContent = "New messages";
  first.before(divider);
}

// For the end-to-end tests and the curious: the live objects of this page.
window.parley = { connection, outbox, list, usage, receipts };
