// The connection banner: honest about the line. Nothing while connected; a countdown
// with "Retry now" while reconnecting; a plain statement offline, signed out or banned.

export class Banner {
  constructor(box, { onRetry }) {
    this.box = box;
    this.text = box.querySelector(".banner-text");
    this.action = box.querySelector(".banner-action");
    this.action.addEventListener("click", () => onRetry());
    this.state = "connecting";
    this.waiting = 0;
    this.countdown = 0;
    this.lost = false;
    this.pending = 0;
    this.showTimer = 0;
    this.hideTimer = 0;
  }

  setPending(count) {
    this.pending = count;
    if (this.state !== "open") this.#render();
  }

  setState({ state, at }) {
    const wasOpen = this.state === "open";
    this.state = state;
    clearInterval(this.countdown);
    clearTimeout(this.showTimer);
    clearTimeout(this.hideTimer);
    if (state === "open") {
      if (this.lost) {
        this.#show("Back online.", "ok");
        this.hideTimer = setTimeout(() => this.#hide(), 2000);
      } else {
        this.#hide();
      }
      this.lost = false;
      return;
    }
    if (wasOpen) this.lost = true;
    if (state === "connecting") {
      // A quick first connect shows nothing; a slow one says so.
      this.showTimer = setTimeout(() => this.#render(), this.lost ? 0 : 1000);
      return;
    }
    this.lost = true;
    if (state === "waiting") {
      this.waiting = at;
      this.countdown = setInterval(() => this.#render(), 1000);
    }
    this.#render();
  }

  #waitingText() {
    const seconds = Math.max(0, Math.ceil((this.waiting - Date.now()) / 1000));
    return seconds ? `Connection lost. Reconnecting in ${seconds} s…` : "Connection lost. Reconnecting…";
  }

  #render() {
    const pending = this.pending ? ` ${this.pending} message${this.pending === 1 ? "" : "s"} waiting to be sent.` : "";
    switch (this.state) {
      case "connecting":
        return this.#show(this.lost ? `Reconnecting…${pending}` : "Connecting…", "info");
      case "waiting":
        return this.#show(`${this.#waitingText()}${pending}`, "warn", "Retry now");
      case "offline":
        return this.#show(`You're offline. Messages you send will go out when you're back.${pending}`, "warn");
      case "signed-out":
        return this.#show("Your session has ended. Log in again to keep chatting.", "error", null, `/accounts/login/?next=${encodeURIComponent(location.pathname)}`);
      case "banned":
        return this.#show("This account can no longer send or receive messages.", "error");
      default:
        return this.#hide();
    }
  }

  #show(text, tone, action = null, link = null) {
    this.box.hidden = false;
    this.box.dataset.tone = tone;
    this.box.dataset.state = this.state;
    this.text.textContent = text;
    if (link) {
      const a = document.createElement("a");
      a.href = link;
      a.textContent = "Log in";
      this.text.append(" ", a);
    }
    this.action.hidden = !action;
    if (action) this.action.textContent = action;
  }

  #hide() {
    this.box.hidden = true;
    this.box.dataset.state = this.state;
  }
}
