// Usage bars: one per kind (text, audio, media), each in its own colour, from the
// usage objects of conversation:joined and usage:update (docs/protocol.md section 4).
// At 80 % a warning; at the limit the kind is off, with an upgrade prompt.

import { el } from "./util.js";

const LABELS = { text: "Messages", audio: "Voice", media: "Media" };
const NOUNS = { text: ["text message", "text messages"], audio: ["voice message", "voice messages"], media: ["photo, video or file", "photos, videos or files"] };
const PERIODS = { day: "today", month: "this month" };
const ORDER = ["text", "audio", "media"];

function noun(kind, n) {
  const [one, many] = NOUNS[kind] || [kind, kind];
  return n === 1 ? one : many;
}

export function describe(usage) {
  const period = PERIODS[usage.period] || `this ${usage.period}`;
  if (usage.limit === null || usage.limit === undefined) return `Unlimited ${noun(usage.kind, 2)}`;
  if (usage.level === "exhausted" || usage.remaining === 0) {
    return `You have used all ${usage.limit} ${noun(usage.kind, usage.limit)} ${period}.`;
  }
  return `${usage.remaining} of ${usage.limit} ${noun(usage.kind, usage.limit)} left ${period}`;
}

function resetText(usage) {
  const date = new Date(usage.resets_at);
  if (Number.isNaN(date.getTime())) return "";
  const sameDay = date.toDateString() === new Date().toDateString();
  const format = new Intl.DateTimeFormat(undefined, sameDay ? { hour: "numeric", minute: "2-digit" } : { weekday: "short", hour: "numeric", minute: "2-digit" });
  return `Resets ${sameDay ? "at" : "on"} ${format.format(date)}.`;
}

export class UsageBars extends EventTarget {
  constructor(box, { characters }) {
    super();
    this.box = box;
    this.characters = new Set(characters);
    this.usage = new Map(); // kind -> usage object (for this conversation's character)
  }

  relevant(usage) {
    return usage && this.characters.has(usage.character);
  }

  setAll(list) {
    for (const usage of list || []) this.update(usage, { quiet: true });
    this.#render();
  }

  update(usage, { quiet = false } = {}) {
    if (!this.relevant(usage)) return;
    this.usage.set(usage.kind, usage);
    if (!quiet) this.#render();
  }

  // Which kinds are off, with a reason each: {text: bool, audio: bool, media: bool, reasons}
  capabilities() {
    const caps = { text: true, audio: true, media: true, reasons: {} };
    for (const [kind, usage] of this.usage) {
      if (usage.level === "exhausted" || usage.remaining === 0) {
        caps[kind] = false;
        caps.reasons[kind] = `${describe(usage)} ${resetText(usage)}`.trim();
      }
    }
    return caps;
  }

  exhausted() {
    return Array.from(this.usage.values()).filter((u) => u.level === "exhausted" || u.remaining === 0);
  }

  #render() {
    const items = ORDER.filter((k) => this.usage.has(k)).map((kind) => this.#bar(this.usage.get(kind)));
    for (const [kind, usage] of this.usage) if (!ORDER.includes(kind)) items.push(this.#bar(usage));
    this.box.replaceChildren(...items);
    this.box.hidden = items.length === 0;
    this.dispatchEvent(new Event("change"));
  }

  #bar(usage) {
    const unlimited = usage.limit === null || usage.limit === undefined;
    const fraction = unlimited ? 0 : Math.min(1, usage.used / Math.max(1, usage.limit));
    const fill = el("span", { class: "usage-fill" });
    fill.style.transform = `scaleX(${fraction.toFixed(4)})`; // CSSOM: allowed by the CSP
    const label = describe(usage);
    return el(
      "div",
      { class: `usage-item usage-${usage.kind} level-${usage.level || "ok"}`, title: `${label}. ${resetText(usage)}`, dataset: { kind: usage.kind } },
      el("span", { class: "usage-label" }, el("span", { class: "usage-name", text: LABELS[usage.kind] || usage.kind }), el("span", { class: "usage-count", text: unlimited ? "∞" : `${usage.used}/${usage.limit}` })),
      el("span", {
        class: "usage-track",
        role: "meter",
        "aria-label": `${LABELS[usage.kind] || usage.kind}: ${label}`,
        "aria-valuemin": "0",
        "aria-valuemax": unlimited ? "1" : String(usage.limit),
        "aria-valuenow": unlimited ? "0" : String(usage.used),
      }, fill),
    );
  }
}
