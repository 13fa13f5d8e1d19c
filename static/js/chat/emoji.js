// A small built-in emoji picker: a grid of buttons in a popover, arrow keys to move,
// Enter to insert, Escape to close (focus goes back to the button that opened it).

import { el } from "./util.js";

export const EMOJI = {
  Smileys: ["😀", "😄", "😂", "🥲", "😊", "😍", "🥰", "😘", "😎", "🤓", "🤔", "🤨", "😴", "😮", "😢", "😭", "😡", "🤯", "🥳", "😇", "🙃", "😉", "😬", "🤗"],
  Gestures: ["👍", "👎", "👏", "🙌", "🙏", "👋", "🤝", "💪", "✌️", "🤞", "👌", "🫶"],
  Things: ["❤️", "🔥", "✨", "🎉", "💯", "⭐", "☕", "🍕", "🌊", "⚓", "📚", "🎵", "💡", "✅", "❓", "⚡"],
};

export class EmojiPicker {
  constructor(panel, toggle, { onPick }) {
    this.panel = panel;
    this.toggle = toggle;
    this.onPick = onPick;
    this.buttons = [];
    for (const [group, list] of Object.entries(EMOJI)) {
      const grid = el("div", { class: "emoji-grid", role: "group", "aria-label": group });
      for (const emoji of list) {
        const button = el("button", { type: "button", class: "emoji", text: emoji, "aria-label": emoji, tabindex: "-1" });
        button.addEventListener("click", () => this.#pick(emoji));
        grid.append(button);
        this.buttons.push(button);
      }
      panel.append(el("p", { class: "emoji-group", text: group, "aria-hidden": "true" }), grid);
    }
    toggle.addEventListener("click", () => (this.isOpen() ? this.close() : this.open()));
    panel.addEventListener("keydown", (event) => this.#key(event));
    document.addEventListener("click", (event) => {
      if (this.isOpen() && !panel.contains(event.target) && !toggle.contains(event.target)) this.close(false);
    });
  }

  isOpen() {
    return !this.panel.hidden;
  }

  open() {
    this.panel.hidden = false;
    this.toggle.setAttribute("aria-expanded", "true");
    this.#focus(0);
  }

  close(refocus = true) {
    this.panel.hidden = true;
    this.toggle.setAttribute("aria-expanded", "false");
    if (refocus) this.toggle.focus();
  }

  #pick(emoji) {
    this.onPick(emoji);
    this.panel.hidden = true;
    this.toggle.setAttribute("aria-expanded", "false");
  }

  #focus(index) {
    const count = this.buttons.length;
    const i = ((index % count) + count) % count;
    this.buttons.forEach((b, j) => (b.tabIndex = j === i ? 0 : -1));
    this.buttons[i].focus();
  }

  #key(event) {
    const current = this.buttons.indexOf(document.activeElement);
    const columns = 8;
    const moves = { ArrowRight: 1, ArrowLeft: -1, ArrowDown: columns, ArrowUp: -columns };
    if (event.key === "Escape") {
      event.preventDefault();
      this.close();
    } else if (event.key in moves && current >= 0) {
      event.preventDefault();
      this.#focus(current + moves[event.key]);
    } else if (event.key === "Tab") {
      this.close(false);
    }
  }
}
