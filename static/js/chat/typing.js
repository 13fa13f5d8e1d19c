// Who is typing: names from typing:indicator frames, each forgotten after a while
// even if its "stopped" frame never comes (the server also expires typists at 6 s).

const FORGET_MS = 8000;

export class TypingIndicator {
  constructor(box) {
    this.box = box;
    this.names = box.querySelector(".typing-names");
    this.typists = new Map(); // "type:id" -> {name, timer}
  }

  set(user, isTyping) {
    const key = `${user.type}:${user.id}`;
    const known = this.typists.get(key);
    if (known) clearTimeout(known.timer);
    if (isTyping) {
      const timer = setTimeout(() => this.set(user, false), FORGET_MS);
      this.typists.set(key, { name: user.name, timer });
    } else {
      this.typists.delete(key);
    }
    this.#render();
  }

  clear() {
    for (const { timer } of this.typists.values()) clearTimeout(timer);
    this.typists.clear();
    this.#render();
  }

  #render() {
    const names = Array.from(this.typists.values(), (t) => t.name);
    this.box.hidden = names.length === 0;
    let text = "";
    if (names.length === 1) text = `${names[0]} is typing…`;
    else if (names.length === 2) text = `${names[0]} and ${names[1]} are typing…`;
    else if (names.length > 2) text = `${names[0]} and ${names.length - 1} others are typing…`;
    this.names.textContent = text;
  }
}
