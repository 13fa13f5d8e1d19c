// The message list: one <li> per message, confirmed ones keyed by message id (so a
// message received twice is drawn once), pending ones (still in the outbox) keyed by
// client_id until the server confirms them.

import { attachmentView } from "./media.js";
import { safeFragment } from "./sanitize.js";
import { codePoints, el, formatFull, formatTime, initials, tone } from "./util.js";

const TICK_LABELS = {
  sending: "Sending",
  sent: "Sent",
  delivered: "Delivered",
  read: "Read",
  failed: "Not sent",
};

function tickIcon(state) {
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", "0 0 20 14");
  svg.setAttribute("width", "18");
  svg.setAttribute("height", "12");
  svg.setAttribute("aria-hidden", "true");
  const path = (d) => {
    const p = document.createElementNS(ns, "path");
    p.setAttribute("d", d);
    p.setAttribute("fill", "none");
    p.setAttribute("stroke", "currentColor");
    p.setAttribute("stroke-width", "1.8");
    p.setAttribute("stroke-linecap", "round");
    p.setAttribute("stroke-linejoin", "round");
    svg.append(p);
  };
  if (state === "sending") {
    const c = document.createElementNS(ns, "circle");
    c.setAttribute("cx", "10");
    c.setAttribute("cy", "7");
    c.setAttribute("r", "5.2");
    c.setAttribute("fill", "none");
    c.setAttribute("stroke", "currentColor");
    c.setAttribute("stroke-width", "1.5");
    svg.append(c);
    path("M10 4.2V7l1.8 1.2");
  } else if (state === "failed") {
    path("M10 2.5v6");
    path("M10 11.3v.2");
  } else if (state === "sent") {
    path("M5 7.5l3 3 7-7.5");
  } else {
    path("M1.5 7.5l3 3 7-7.5");
    path("M8.5 10.5l.5.2 7-7.7");
  }
  return svg;
}

export class MessageList {
  constructor(list, { me, kind, onRetry, onDiscard }) {
    this.list = list;
    this.me = me;
    this.kind = kind;
    this.onRetry = onRetry;
    this.onDiscard = onDiscard;
    this.byId = new Map(); // message id -> <li>
    this.byClient = new Map(); // client_id -> <li> (pending)
    this.streams = new Map(); // message id -> code points so far (streaming replies)
  }

  isMine(message) {
    return message.sender && message.sender.type === "user" && message.sender.id === this.me.id;
  }

  has(id) {
    return this.byId.has(id);
  }

  item(id) {
    return this.byId.get(id) || null;
  }

  // --- Confirmed messages

  upsert(message) {
    let item = this.byId.get(message.id);
    if (!item && message.client_id && this.isMine(message)) {
      // Our own pending bubble: it becomes the confirmed message, in place.
      item = this.byClient.get(message.client_id) || null;
      if (item) {
        this.byClient.delete(message.client_id);
        item.remove();
        item = null;
      }
    }
    const fresh = !item;
    if (!item) {
      item = this.#skeleton(message);
      this.byId.set(message.id, item);
      this.#insert(item, message.seq);
    }
    this.#fill(item, message);
    this.#group(item);
    return { item, fresh };
  }

  #skeleton(message) {
    const mine = this.isMine(message);
    const system = message.kind === "system" || (message.sender && message.sender.type === "system");
    const item = el("li", {
      class: `msg ${system ? "msg-system" : mine ? "mine" : "theirs"}`,
      dataset: { sender: message.sender ? `${message.sender.type}:${message.sender.id}` : "" },
    });
    if (system) {
      item.append(el("div", { class: "bubble" }, el("div", { class: "body markdown" })));
      return item;
    }
    if (!mine) {
      const sender = message.sender || { name: "?" };
      const avatar = sender.avatar
        ? el("img", { class: "avatar avatar-sm", src: sender.avatar, alt: "" })
        : el("span", { class: `avatar avatar-sm tone-${tone(sender.name)}`, "aria-hidden": "true", text: initials(sender.name) });
      item.append(avatar);
    }
    const bubble = el(
      "div",
      { class: "bubble" },
      mine ? null : el("div", { class: "who", text: (message.sender && message.sender.name) || "" }),
      el("div", { class: "media" }),
      el("div", { class: "body markdown" }),
      el("div", { class: "meta" }, el("span", { class: "tags" }), el("time", { class: "time" }), el("span", { class: "ticks" })),
      el("div", { class: "note", role: "note" }),
    );
    item.append(bubble);
    return item;
  }

  #fill(item, message) {
    item.dataset.id = String(message.id);
    item.dataset.seq = String(message.seq);
    item.dataset.status = message.status;
    if (message.client_id) item.dataset.clientId = message.client_id;
    else delete item.dataset.clientId;
    const body = item.querySelector(".body");
    if (message.deleted) {
      item.classList.add("deleted");
      body.textContent = "This message was deleted.";
    } else if (message.status === "streaming") {
      const points = codePoints(message.text);
      const known = this.streams.get(message.id);
      // Keep deltas that arrived before this (older) snapshot.
      this.streams.set(message.id, known && known.length > points.length ? known : points);
      body.classList.add("streaming");
      body.textContent = this.streams.get(message.id).join("");
    } else {
      this.streams.delete(message.id);
      body.classList.remove("streaming", "plain");
      body.replaceChildren(safeFragment(message.html));
    }
    const media = item.querySelector(".media");
    if (media && message.attachment && !message.deleted) {
      const current = media.dataset.attachment;
      if (current !== String(message.attachment.id)) {
        media.replaceChildren(attachmentView(message.attachment));
        media.dataset.attachment = String(message.attachment.id);
      }
    }
    const time = item.querySelector(".time");
    if (time) {
      time.dateTime = message.created_at;
      time.textContent = formatTime(message.created_at);
      time.title = formatFull(message.created_at);
    }
    const tags = item.querySelector(".tags");
    if (tags) {
      const metadata = message.metadata || {};
      tags.replaceChildren(
        metadata.offline ? el("span", { class: "tag tag-offline", title: "Written by Parley's offline responder, not Claude", text: "offline responder" }) : "",
        message.edited_at ? el("span", { class: "tag", text: "edited" }) : "",
      );
    }
    const note = item.querySelector(".note");
    if (note) note.replaceChildren(...this.#notes(message));
    if (this.isMine(message) && !item.dataset.tick) this.setTick(item, "sent");
  }

  #notes(message) {
    const notes = [];
    const metadata = message.metadata || {};
    if (metadata.context && metadata.context.trimmed) {
      notes.push(el("span", { text: "No longer remembers the start of the conversation." }));
    }
    if (message.status === "stopped") notes.push(el("span", { text: "Stopped." }));
    if (message.status === "failed" && message.role === "assistant") {
      notes.push(el("span", { class: "error-text", text: "The reply failed. Send a message to try again." }));
    }
    return notes;
  }

  // --- Streaming replies

  stream(frame) {
    const known = this.streams.get(frame.message_id);
    if (!known) return false;
    if (frame.offset > known.length) return false; // a gap: message:update brings the text
    const next = known.slice(0, frame.offset).concat(codePoints(frame.delta));
    this.streams.set(frame.message_id, next);
    const item = this.byId.get(frame.message_id);
    if (item) item.querySelector(".body").textContent = next.join("");
    return true;
  }

  streamingIds() {
    return Array.from(this.streams.keys());
  }

  streamingSeqs() {
    return this.streamingIds().map((id) => Number(this.byId.get(id)?.dataset.seq)).filter(Boolean);
  }

  // --- Pending (outbox) messages

  pending(entry) {
    let item = this.byClient.get(entry.client_id);
    if (!item) {
      const message = {
        id: `pending-${entry.client_id}`,
        seq: Infinity,
        sender: { type: "user", id: this.me.id, name: this.me.name },
        kind: entry.kind,
        text: entry.text,
        created_at: entry.created_at,
      };
      item = this.#skeleton(message);
      item.classList.add("pending");
      item.dataset.clientId = entry.client_id;
      const body = item.querySelector(".body");
      body.textContent = entry.text;
      body.classList.add("plain");
      if (entry.attachment) item.querySelector(".media").append(attachmentView(entry.attachment));
      const time = item.querySelector(".time");
      time.dateTime = entry.created_at;
      time.textContent = formatTime(entry.created_at);
      this.byClient.set(entry.client_id, item);
      this.list.append(item);
      this.#group(item);
    }
    this.#pendingState(item, entry);
    return item;
  }

  #pendingState(item, entry) {
    const failed = entry.state === "failed";
    this.setTick(item, failed ? "failed" : "sending");
    const note = item.querySelector(".note");
    if (!failed) {
      note.replaceChildren();
      return;
    }
    const message = (entry.error && entry.error.message) || "Not sent.";
    note.replaceChildren(
      el("span", { class: "error-text", text: message }),
      el("button", { type: "button", class: "link-button retry", text: "Retry", onclick: () => this.onRetry(entry.client_id) }),
      el("button", { type: "button", class: "link-button discard", text: "Delete", onclick: () => this.onDiscard(entry.client_id) }),
    );
  }

  // The server stored it (message:status sent) but its message:receive has not come
  // (a retried send is not broadcast again): turn the bubble into the real message.
  confirm(clientId, messageId, seq) {
    const item = this.byClient.get(clientId);
    if (!item) return;
    this.byClient.delete(clientId);
    if (this.byId.has(messageId)) {
      item.remove();
      return;
    }
    item.classList.remove("pending");
    item.dataset.id = String(messageId);
    item.dataset.seq = String(seq);
    this.byId.set(messageId, item);
    item.remove();
    this.#insert(item, seq);
    this.setTick(item, "sent");
  }

  dropPending(clientId) {
    const item = this.byClient.get(clientId);
    if (item) item.remove();
    this.byClient.delete(clientId);
  }

  pendingIds() {
    return Array.from(this.byClient.keys());
  }

  // --- Ticks on own messages

  setTick(item, state) {
    const ticks = item.querySelector(".ticks");
    if (!ticks || item.dataset.tick === state) return;
    item.dataset.tick = state;
    ticks.className = `ticks tick-${state}`;
    ticks.setAttribute("role", "img");
    ticks.setAttribute("aria-label", TICK_LABELS[state]);
    ticks.title = TICK_LABELS[state];
    ticks.replaceChildren(tickIcon(state));
  }

  ownConfirmed() {
    return Array.from(this.byId.values()).filter((item) => item.classList.contains("mine"));
  }

  // --- Order and grouping

  #insert(item, seq) {
    // After the last message with a lower seq, before every pending bubble.
    const firstPending = this.list.querySelector(":scope > li.pending");
    let cursor = firstPending ? firstPending.previousElementSibling : this.list.lastElementChild;
    while (cursor && !(Number(cursor.dataset.seq) < seq)) cursor = cursor.previousElementSibling;
    this.list.insertBefore(item, cursor ? cursor.nextElementSibling : this.list.firstElementChild);
    this.#group(item.nextElementSibling);
  }

  #group(item) {
    if (!item || !item.matches || !item.matches("li.msg")) return;
    const previous = item.previousElementSibling;
    const same = previous && previous.matches("li.msg") && previous.dataset.sender === item.dataset.sender && !item.classList.contains("msg-system");
    item.classList.toggle("cont", Boolean(same));
    const next = item.nextElementSibling;
    if (next && next.matches("li.msg")) {
      next.classList.toggle("cont", next.dataset.sender === item.dataset.sender && !next.classList.contains("msg-system"));
    }
  }

  oldestSeq() {
    const first = this.list.querySelector(":scope > li.msg[data-seq]:not(.pending)");
    return first ? Number(first.dataset.seq) : null;
  }

  newestSeq() {
    let newest = 0;
    for (const item of this.byId.values()) newest = Math.max(newest, Number(item.dataset.seq) || 0);
    return newest;
  }
}
