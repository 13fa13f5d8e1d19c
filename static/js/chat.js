// Minimal chat client for the character page: speaks the websocket protocol
// (docs/protocol.md), resumes with `since` after a reconnect, de-duplicates by seq.
const root = document.querySelector(".chat");
const list = root.querySelector(".messages");
const status = root.querySelector(".status");
const form = root.querySelector(".composer");
const input = form.querySelector("textarea");
let socket = null;
let conversation = null;
let lastSeq = null;
let me = null;
let retry = 0;

function render(message) {
  if (lastSeq !== null && message.seq <= lastSeq) return;
  lastSeq = message.seq;
  const item = document.createElement("li");
  item.dataset.seq = message.seq;
  if (message.sender.type === "user" && me && message.sender.id === me.id) item.classList.add("mine");
  const who = document.createElement("div");
  who.className = "who";
  who.textContent = message.sender.name;
  const body = document.createElement("div");
  body.innerHTML = message.html; // sanitized by the server when stored
  item.append(who, body);
  list.append(item);
  item.scrollIntoView({ block: "end" });
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
        frame.messages.forEach(render);
        break;
      case "message:receive":
        if (frame.message.conversation === conversation) render(frame.message);
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

connect();
