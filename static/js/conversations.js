// "My conversations": local times, live presence dots (presence:update on the
// page's websocket), and the list refreshed from the server while the page is open.

import { Connection } from "./chat/socket.js";
import { formatShortDay } from "./chat/util.js";

const REFRESH_MS = 20000;
const statuses = new Map(); // user id -> online | away | offline

function localTimes(root = document) {
  for (const time of root.querySelectorAll("time[datetime]")) {
    time.textContent = formatShortDay(time.dateTime);
  }
}

function paintPresence(root = document) {
  for (const dot of root.querySelectorAll("[data-presence-for]")) {
    const ids = dot.dataset.presenceFor.split(/\s+/).filter(Boolean);
    if (!ids.some((uid) => statuses.has(uid))) continue;
    const known = ids.map((uid) => statuses.get(uid) || "offline");
    const status = known.includes("online") ? "online" : known.includes("away") ? "away" : "offline";
    dot.className = `presence presence-${status}`;
    dot.title = status[0].toUpperCase() + status.slice(1);
    const label = dot.querySelector(".visually-hidden");
    if (label) label.textContent = status;
  }
}

async function refresh() {
  if (document.visibilityState !== "visible") return;
  try {
    const response = await fetch(location.href, { credentials: "same-origin", headers: { Accept: "text/html" } });
    if (!response.ok) return;
    const page = new DOMParser().parseFromString(await response.text(), "text/html");
    const fresh = page.querySelector(".conversation-list");
    const current = document.querySelector(".conversation-list");
    if (fresh && current) {
      localTimes(fresh);
      paintPresence(fresh);
      current.replaceWith(document.adoptNode(fresh));
    }
  } catch {
    // Offline: the list stays as it is.
  }
}

localTimes();
const connection = new Connection();
connection.addEventListener("frame", (event) => {
  const frame = event.detail;
  if (frame.type === "presence:update" && frame.user) {
    statuses.set(String(frame.user.id), frame.status);
    paintPresence();
  }
});
connection.start();
setInterval(refresh, REFRESH_MS);
document.addEventListener("visibilitychange", refresh);
