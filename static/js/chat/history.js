// Infinite scroll back through history over REST
// (GET /api/conversations/{id}/messages/?before=SEQ), keeping the reader's place.

import { api } from "./util.js";

export const PAGE = 50;

export class History {
  constructor({ conversation, scroller, box, list, onMessages }) {
    this.conversation = conversation;
    this.scroller = scroller;
    this.list = list;
    this.onMessages = onMessages;
    this.button = box.querySelector(".load-older");
    this.start = box.querySelector(".history-start");
    this.loading = false;
    this.done = false;
    this.button.addEventListener("click", () => this.loadOlder());
    this.observer = new IntersectionObserver((entries) => {
      if (entries.some((e) => e.isIntersecting)) this.loadOlder();
    }, { root: scroller, rootMargin: "300px 0px 0px 0px" });
    this.observer.observe(box);
    this.refresh();
  }

  refresh() {
    const oldest = this.list.oldestSeq();
    if (oldest !== null && oldest <= 1) this.done = true;
    this.button.hidden = this.done || oldest === null;
    this.start.hidden = !this.done;
  }

  async loadOlder() {
    if (this.loading || this.done) return;
    const oldest = this.list.oldestSeq();
    if (oldest === null || oldest <= 1) return this.refresh();
    this.loading = true;
    this.button.textContent = "Loading…";
    this.button.setAttribute("aria-busy", "true");
    try {
      const page = await api(`/api/conversations/${this.conversation}/messages/?before=${oldest}&limit=${PAGE}`);
      const height = this.scroller.scrollHeight;
      const top = this.scroller.scrollTop;
      this.onMessages(page.results);
      // Keep what the reader was looking at where it was.
      this.scroller.scrollTop = top + (this.scroller.scrollHeight - height);
      if (!page.has_more) this.done = true;
    } catch {
      // Offline or a server hiccup: the button stays for another try.
    } finally {
      this.loading = false;
      this.button.textContent = "Load older messages";
      this.button.removeAttribute("aria-busy");
      this.refresh();
      // Still at the top (a short page): keep going.
      if (!this.done && this.scroller.scrollTop < 50) requestAnimationFrame(() => this.loadOlder());
    }
  }

  // Forward over REST after a resume that said `gap: true`.
  async fillForward(after) {
    let cursor = after;
    for (let i = 0; i < 100; i += 1) {
      const page = await api(`/api/conversations/${this.conversation}/messages/?after=${cursor}&limit=200`);
      if (!page.results.length) return;
      this.onMessages(page.results);
      cursor = page.results[page.results.length - 1].seq;
      if (!page.has_more) return;
    }
  }
}
