// What the user typed is never lost: messages wait in an outbox kept in
// localStorage until the server has confirmed them (a reload or a closed tab keeps
// them), and are re-sent with the SAME client_id, so that the server stores each
// once (contract section 5, guarantee 2). Drafts are kept the same way.

const VERSION = "v1";
export const OUTBOX_LIMIT = 50; // queued messages per user: past it, the composer waits

function readJSON(key, fallback) {
  try {
    const raw = localStorage.getItem(key);
    return raw ? JSON.parse(raw) : fallback;
  } catch {
    return fallback;
  }
}

function writeJSON(key, value) {
  try {
    if (value === null) localStorage.removeItem(key);
    else localStorage.setItem(key, JSON.stringify(value));
    return true;
  } catch {
    return false; // storage full or blocked: the message still goes out if online
  }
}

export function newClientId() {
  if (crypto.randomUUID) return crypto.randomUUID();
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

export class Outbox extends EventTarget {
  constructor(userId) {
    super();
    this.key = `parley:outbox:${VERSION}:${userId}`;
    this.entries = readJSON(this.key, []);
    // Another tab of the same user changed it.
    window.addEventListener("storage", (event) => {
      if (event.key !== this.key) return;
      this.entries = readJSON(this.key, []);
      this.dispatchEvent(new Event("change"));
    });
  }

  #save() {
    writeJSON(this.key, this.entries.length ? this.entries : null);
    this.dispatchEvent(new Event("change"));
  }

  get size() {
    return this.entries.length;
  }

  isFull() {
    return this.entries.length >= OUTBOX_LIMIT;
  }

  add({ conversation, text, kind = "text", attachment = null, replyTo = null }) {
    const entry = {
      client_id: newClientId(),
      conversation,
      kind,
      text,
      attachment, // the attachment object from the upload, or null
      reply_to: replyTo,
      created_at: new Date().toISOString(),
      state: "queued", // queued | failed
      error: null,
    };
    this.entries.push(entry);
    this.#save();
    return entry;
  }

  get(clientId) {
    return this.entries.find((e) => e.client_id === clientId) || null;
  }

  forConversation(conversation) {
    return this.entries.filter((e) => e.conversation === conversation);
  }

  queued(conversation) {
    return this.forConversation(conversation).filter((e) => e.state === "queued");
  }

  remove(clientId) {
    const before = this.entries.length;
    this.entries = this.entries.filter((e) => e.client_id !== clientId);
    if (this.entries.length !== before) this.#save();
  }

  fail(clientId, error) {
    const entry = this.get(clientId);
    if (!entry) return;
    entry.state = "failed";
    entry.error = error || null;
    this.#save();
  }

  retry(clientId) {
    const entry = this.get(clientId);
    if (!entry) return null;
    entry.state = "queued";
    entry.error = null;
    this.#save();
    return entry;
  }
}

export function frameFor(entry) {
  const frame = {
    type: "message:send",
    conversation: entry.conversation,
    client_id: entry.client_id,
    kind: entry.kind,
    text: entry.text,
  };
  if (entry.attachment) frame.attachment = entry.attachment.id;
  if (entry.reply_to) frame.reply_to = entry.reply_to;
  return frame;
}

export class Drafts {
  constructor(userId, conversation) {
    this.key = `parley:draft:${VERSION}:${userId}:${conversation}`;
  }

  load() {
    return readJSON(this.key, "") || "";
  }

  save(text) {
    writeJSON(this.key, text ? text : null);
  }
}
