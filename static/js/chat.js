// Minimal chat client for the character page: speaks the websocket protocol
// (docs/protocol.md), resumes with `since` after a reconnect, de-duplicates by seq,
// and shows character replies as they stream.
const root = document.querySelector(".chat");
const list = root.querySelector(".messages");
const status = root.querySelector(".status");
const typing = root.querySelector(".typing");
const form = root.querySelector(".composer");
const input = form.querySelector("textarea");
const stop = root.querySelector(".stop");
let socket = null;
let conversation = null;
let lastSeq = null;
let me = null;
let retry = 0;
const texts = new Map(); // message id -> text so far, for streaming replies

function itemFor(message) {
  let item = list.querySelector(`[data-id="${message.id}"]`);
  if (!item) {
    item = document.createElement("li");
    item.dataset.id = message.id;
    const who = document.createElement("div");
    who.className = "who";
    who.textContent = message.sender.name;
    const body = document.createElement("div");
    body.className = "body";
    const note = document.createElement("div");
    note.className = "note";
    item.append(who, body, note);
    list.append(item);
  }
  return item;
}

function render(message) {
  const item = itemFor(message);
  if (message.sender.type === "user" && me && message.sender.id === me.id) item.classList.add("mine");
  item.dataset.status = message.status;
  const body = item.querySelector(".body");
  if (message.status === "streaming") {
    texts.set(message.id, message.text);
    body.textContent = message.text;
  } else {
    texts.delete(message.id);
    body.innerHTML = message.html; // sanitized by the server when stored
  }
  const notes = [];
  const context = message.metadata && message.metadata.context;
  if (context && context.trimmed) notes.push("No longer remembers the start of the conversation.");
  if (message.status === "stopped") notes.push("Stopped.");
  if (message.status === "failed") notes.push("The reply failed: send again to retry.");
  item.querySelector(".note").textContent = notes.join(" ");
  stop.hidden = ![...texts.keys()].length;
  item.scrollIntoView({ block: "end" });
}

function receive(message) {
  if (lastSeq !== null && message.seq <= lastSeq) return;
  lastSeq = message.seq;
  render(message);
}

function stream(frame) {
  const known = texts.get(frame.message_id);
  if (known === undefined) return;
  const chars = Array.from(known); // offsets count Unicode code points
  if (frame.offset > chars.length) return; // a gap: message:update will bring the text
  const text = chars.slice(0, frame.offset).join("") + frame.delta;
  texts.set(frame.message_id, text);
  list.querySelector(`[data-id="${frame.message_id}"] .body`).textContent = text;
}

function connect() {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  socket = new WebSocket(`${scheme}://${location.host}/ws/chat/`);
  socket.addEventListener("message", (event) => {
    const frame = JSON.parse(event.data);
    switch (frame.type) {
      case "session:ready":
        me = frame.user;
        retry = 0;
        status.textContent = "Connected";
        socket.send(JSON.stringify({ type: "conversation:join", character: root.dataset.character,
          ...(lastSeq !== null ? { since: lastSeq } : {}) }));
        break;
      case "conversation:joined":
        conversation = frame.conversation.id;
        frame.messages.forEach(receive);
        break;
      case "message:receive":
        if (frame.message.conversation === conversation) receive(frame.message);
        break;
      case "message:update":
        if (frame.message.conversation === conversation) render(frame.message);
        break;
      case "message:stream":
        if (frame.conversation === conversation) stream(frame);
        break;
      case "typing:indicator":
        if (frame.conversation === conversation)
          typing.textContent = frame.is_typing ? `${frame.user.name} is typing…` : "";
        break;
      case "error":
        status.textContent = frame.message;
        break;
    }
  });
  socket.addEventListener("close", (event) => {
    if (event.code === 4401 || event.code === 4403) {
      status.textContent = "Signed out: please log in again.";
      return;
    }
    status.textContent = "Reconnecting…";
    const delay = Math.min(30000, 500 * 2 ** retry++) * (0.5 + Math.random() / 2);
    setTimeout(connect, delay);
  });
}

form.addEventListener("submit", (event) => {
  event.preventDefault();
  const text = input.value.trim();
  if (!text || !conversation || socket.readyState !== WebSocket.OPEN) return;
  socket.send(JSON.stringify({ type: "message:send", conversation, client_id: crypto.randomUUID(), text }));
  input.value = "";
});

stop.addEventListener("click", () => {
  if (conversation && socket.readyState === WebSocket.OPEN)
    socket.send(JSON.stringify({ type: "generation:stop", conversation }));
});

connect();
