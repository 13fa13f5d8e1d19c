// The one websocket of a page (docs/protocol.md section 1): authenticated by the
// session cookie, reconnecting with exponential backoff and full jitter, with a
// heartbeat that notices a dead connection the browser has not noticed yet.
//
// Events (EventTarget):
//   "state"  detail: {state, delay?, code?}  state is one of
//            connecting | open | waiting (reconnect scheduled) | offline | signed-out | banned
//   "ready"  detail: the session:ready frame (after every (re)connect)
//   "frame"  detail: any frame from the server

export const CLOSE_UNAUTHENTICATED = 4401;
export const CLOSE_FORBIDDEN = 4403;

const BACKOFF_BASE_MS = 500;
const BACKOFF_CAP_MS = 15000;

export function backoffDelay(attempt, random = Math.random) {
  // Full jitter: a uniformly random delay up to an exponential cap, so that a server
  // restart is not followed by every client reconnecting in the same instant.
  const cap = Math.min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * 2 ** attempt);
  return Math.round(cap / 2 + random() * (cap / 2));
}

export class Connection extends EventTarget {
  constructor({ url = defaultUrl() } = {}) {
    super();
    this.url = url;
    this.ws = null;
    this.state = "idle";
    this.attempt = 0;
    this.timer = null;
    this.heartbeat = null;
    this.heartbeatMs = 25000;
    this.lastFrameAt = 0;
    this.user = null;
    window.addEventListener("offline", () => this.#wentOffline());
    window.addEventListener("online", () => this.reconnectNow());
    // A tab brought back after a long sleep: check the line at once.
    document.addEventListener("visibilitychange", () => {
      if (document.visibilityState === "visible" && this.isOpen()) this.ping();
    });
  }

  start() {
    if (!navigator.onLine) return this.#setState("offline");
    this.#open();
  }

  isOpen() {
    return this.state === "open" && this.ws && this.ws.readyState === WebSocket.OPEN;
  }

  send(frame) {
    if (!this.isOpen()) return false;
    this.ws.send(JSON.stringify(frame));
    return true;
  }

  ping() {
    this.send({ type: "ping", t: Date.now() });
  }

  reconnectNow() {
    if (this.state === "signed-out" || this.state === "banned") return;
    clearTimeout(this.timer);
    if (this.isOpen() || this.state === "connecting") return;
    this.attempt = 0;
    this.#open();
  }

  // Drop the line and reconnect (a dead line found by the heartbeat; tests use it too).
  // The socket is let go at once: a close handshake on a dead line can take minutes.
  drop() {
    const ws = this.ws;
    if (!ws) return;
    ws.close(4000, "client dropped the connection");
    this.#closed(ws, { code: 4000 });
  }

  #open() {
    clearTimeout(this.timer);
    this.#setState("connecting");
    const ws = new WebSocket(this.url);
    this.ws = ws;
    ws.addEventListener("message", (event) => this.#receive(ws, event));
    ws.addEventListener("close", (event) => this.#closed(ws, event));
  }

  #receive(ws, event) {
    if (ws !== this.ws) return;
    this.lastFrameAt = Date.now();
    let frame;
    try {
      frame = JSON.parse(event.data);
    } catch {
      return;
    }
    if (frame.type === "session:ready") {
      this.user = frame.user;
      this.attempt = 0;
      this.heartbeatMs = (frame.heartbeat_s || 25) * 1000;
      this.#startHeartbeat();
      this.#setState("open");
      this.dispatchEvent(new CustomEvent("ready", { detail: frame }));
      return;
    }
    this.dispatchEvent(new CustomEvent("frame", { detail: frame }));
  }

  #closed(ws, event) {
    if (ws !== this.ws) return;
    this.ws = null;
    clearInterval(this.heartbeat);
    if (event.code === CLOSE_UNAUTHENTICATED) return this.#setState("signed-out", { code: event.code });
    if (event.code === CLOSE_FORBIDDEN) return this.#setState("banned", { code: event.code });
    if (!navigator.onLine) return this.#setState("offline");
    const delay = backoffDelay(this.attempt++);
    this.#setState("waiting", { delay, at: Date.now() + delay });
    this.timer = setTimeout(() => this.#open(), delay);
  }

  #wentOffline() {
    clearTimeout(this.timer);
    this.#setState("offline");
    // The browser may keep a dead socket open for minutes: close it ourselves.
    if (this.ws) {
      const ws = this.ws;
      this.ws = null;
      clearInterval(this.heartbeat);
      ws.close(4000, "offline");
    }
  }

  #startHeartbeat() {
    clearInterval(this.heartbeat);
    this.lastFrameAt = Date.now();
    const every = Math.max(1000, Math.min(this.heartbeatMs, 25000));
    this.heartbeat = setInterval(() => {
      if (!this.isOpen()) return;
      if (Date.now() - this.lastFrameAt > 2 * every + 5000) {
        this.drop(); // no frame, not even a pong, for two beats: the line is dead
        return;
      }
      this.ping();
    }, every);
  }

  #setState(state, extra = {}) {
    this.state = state;
    this.dispatchEvent(new CustomEvent("state", { detail: { state, ...extra } }));
  }
}

function defaultUrl() {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  return `${scheme}://${location.host}/ws/chat/`;
}
