// The composer: a growing textarea with a character counter (Enter sends,
// Shift+Enter breaks the line), the draft kept in localStorage, typing signals, the
// emoji picker, attachments (pick, drag and drop, paste; with a preview) and voice
// messages, a send button that shows it is busy, and a reason when sending is off.

import { EmojiPicker } from "./emoji.js";
import { attachmentView } from "./media.js";
import { Recorder, recordingSupported } from "./recorder.js";
import { el, formatBytes, formatDuration } from "./util.js";

const TYPING_RESEND_MS = 3000; // the contract: at most one typing:start every 3 s
const TYPING_IDLE_MS = 4000; // quiet this long: typing:stop

export function kindOf(file) {
  const type = (file && file.type) || "";
  if (type.startsWith("image/")) return "image";
  if (type.startsWith("audio/")) return "audio";
  if (type.startsWith("video/")) return "video";
  return "file";
}

export class Composer {
  constructor(form, { maxChars, drafts, onSend, onTyping, dropZone }) {
    this.form = form;
    this.maxChars = maxChars;
    this.drafts = drafts;
    this.onSend = onSend;
    this.onTyping = onTyping;
    this.input = form.querySelector("textarea");
    this.counter = form.querySelector(".counter");
    this.send = form.querySelector(".send");
    this.reason = form.querySelector(".composer-reason");
    this.tray = form.querySelector(".attachment-tray");
    this.fileInput = form.querySelector(".file-input");
    this.attach = form.querySelector(".attach");
    this.record = form.querySelector(".record");
    this.recorderBox = form.querySelector(".recorder");
    this.file = null; // {file, kind, local: attachment-like object for the preview}
    this.busy = false;
    this.blocked = null; // the reason text when sending is off altogether
    this.caps = { text: true, audio: true, media: true, reasons: {} };
    this.typing = false;
    this.typingSentAt = 0;
    this.idleTimer = 0;

    this.input.dataset.placeholder = this.input.placeholder;
    this.input.value = drafts.load();
    this.#changed({ quiet: true });
    this.input.addEventListener("input", () => this.#changed());
    this.input.addEventListener("keydown", (event) => this.#key(event));
    this.input.addEventListener("blur", () => this.#stopTyping());
    this.input.addEventListener("paste", (event) => {
      const file = event.clipboardData && Array.from(event.clipboardData.files || [])[0];
      if (file) {
        event.preventDefault();
        this.setFile(file);
      }
    });
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.submit();
    });

    this.emoji = new EmojiPicker(form.querySelector(".emoji-panel"), form.querySelector(".emoji-toggle"), {
      onPick: (emoji) => this.insert(emoji),
    });

    this.attach.addEventListener("click", () => this.fileInput.click());
    this.fileInput.addEventListener("change", () => {
      if (this.fileInput.files[0]) this.setFile(this.fileInput.files[0]);
      this.fileInput.value = "";
    });
    this.#setupDrop(dropZone || form);
    this.#setupRecorder();
  }

  // --- Text

  insert(text) {
    const { selectionStart: start, selectionEnd: end, value } = this.input;
    this.input.value = value.slice(0, start) + text + value.slice(end);
    const caret = start + text.length;
    this.input.focus();
    this.input.setSelectionRange(caret, caret);
    this.#changed();
  }

  #length() {
    return Array.from(this.input.value).length; // the server counts code points
  }

  #changed({ quiet = false } = {}) {
    const length = this.#length();
    this.counter.textContent = `${length} / ${this.maxChars}`;
    this.counter.classList.toggle("near", length >= this.maxChars * 0.9);
    this.counter.classList.toggle("over", length > this.maxChars);
    this.#autosize();
    this.drafts.save(this.input.value);
    this.#updateSend();
    if (quiet) return;
    if (this.input.value.trim()) this.#startTyping();
    else this.#stopTyping();
  }

  #autosize() {
    // Empty: one line (a long placeholder must not grow it).
    this.input.style.height = "auto";
    if (this.input.value) this.input.style.height = `${Math.min(this.input.scrollHeight + 2, 180)}px`;
  }

  #key(event) {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing && event.keyCode !== 229) {
      event.preventDefault();
      this.submit();
    } else if (event.key === "Escape" && this.emoji.isOpen()) {
      this.emoji.close();
    }
  }

  // --- Typing signals

  #startTyping() {
    const now = Date.now();
    if (!this.typing || now - this.typingSentAt >= TYPING_RESEND_MS) {
      this.typing = true;
      this.typingSentAt = now;
      this.onTyping(true);
    }
    clearTimeout(this.idleTimer);
    this.idleTimer = setTimeout(() => this.#stopTyping(), TYPING_IDLE_MS);
  }

  #stopTyping() {
    clearTimeout(this.idleTimer);
    if (!this.typing) return;
    this.typing = false;
    this.onTyping(false);
  }

  // --- Sending

  canSubmit() {
    if (this.busy || this.blocked) return false;
    const length = this.#length();
    if (length > this.maxChars) return false;
    if (this.file) return this.#fileAllowed(this.file.kind) && (this.caps.text || !this.input.value.trim());
    return this.caps.text && this.input.value.trim().length > 0;
  }

  async submit() {
    if (!this.canSubmit()) return;
    const text = this.input.value;
    const file = this.file;
    this.#stopTyping();
    this.setBusy(true);
    try {
      await this.onSend({ text: file ? text.trim() : text, file });
      this.input.value = "";
      this.clearFile();
      this.#changed({ quiet: true });
    } catch (error) {
      this.flash(error.message || "Could not send.");
    } finally {
      this.setBusy(false);
      this.input.focus();
    }
  }

  setBusy(busy) {
    this.busy = busy;
    this.send.classList.toggle("busy", busy);
    this.send.setAttribute("aria-busy", busy ? "true" : "false");
    this.#updateSend();
  }

  #updateSend() {
    this.send.disabled = !this.canSubmit();
  }

  // A reason shown under the input for a few seconds (an upload that failed...).
  flash(text) {
    if (this.blocked) return;
    this.reason.textContent = text;
    this.reason.hidden = false;
    this.reason.classList.add("transient");
    clearTimeout(this.flashTimer);
    this.flashTimer = setTimeout(() => {
      if (this.reason.classList.contains("transient")) {
        this.reason.hidden = true;
        this.reason.classList.remove("transient");
      }
    }, 6000);
  }

  // Sending is off altogether (signed out, banned, offline with a full outbox); null
  // turns it back on. What the user typed stays where it is.
  setBlocked(reason) {
    this.blocked = reason || null;
    this.#apply();
  }

  // What may be sent now: {text, audio, media, online} and a reason for each that is off.
  setCapabilities(caps) {
    this.caps = { ...this.caps, ...caps, reasons: { ...this.caps.reasons, ...(caps.reasons || {}) } };
    this.#apply();
  }

  #apply() {
    const off = Boolean(this.blocked);
    const offline = this.caps.online === false;
    const textOff = off || !this.caps.text;
    // A quota is explained by the upgrade prompt above the composer (caps.explained).
    const quota = !this.caps.text && !this.caps.explained ? this.caps.reasons.text || "You cannot send text messages now." : "";
    const reason = this.blocked || quota;
    this.reason.classList.remove("transient");
    this.reason.textContent = reason;
    this.reason.hidden = !reason;
    this.input.readOnly = textOff;
    this.input.setAttribute("aria-disabled", textOff ? "true" : "false");
    this.form.classList.toggle("blocked", textOff);
    const audio = !off && !offline && this.caps.audio && recordingSupported();
    const media = !off && !offline && (this.caps.media || this.caps.audio);
    this.record.disabled = !audio;
    this.attach.disabled = !media;
    this.record.title = audio ? "Record a voice message" : this.blocked || this.caps.reasons.audio || (offline ? "Voice messages need a connection." : "Voice messages are not available.");
    this.attach.title = media ? "Attach a photo, video or file" : this.blocked || this.caps.reasons.media || (offline ? "Attachments need a connection." : "Attachments are not available.");
    this.#updateSend();
  }

  #fileAllowed(kind) {
    if (this.caps.online === false) return false;
    return kind === "audio" ? this.caps.audio : this.caps.media;
  }

  // --- Attachments

  setFile(file, extra = {}) {
    if (!file) return;
    const kind = kindOf(file);
    if (!this.#fileAllowed(kind)) {
      this.flash(kind === "audio" ? this.caps.reasons.audio || "You cannot send voice messages now." : this.caps.reasons.media || "You cannot send attachments now.");
      return;
    }
    this.clearFile();
    const url = URL.createObjectURL(file);
    const local = { id: "local", kind, url, content_type: file.type, size: file.size, name: file.name, duration_s: extra.duration || null, waveform: extra.waveform || null };
    this.file = { file, kind, local, url };
    const remove = el("button", { type: "button", class: "icon-button tray-remove", "aria-label": `Remove ${file.name}`, text: "✕", onclick: () => this.clearFile() });
    const caption = el("span", { class: "tray-caption" }, el("span", { class: "tray-name", text: file.name }), el("span", { class: "tray-size", text: kind === "audio" && extra.duration ? formatDuration(extra.duration) : formatBytes(file.size) }));
    const progress = el("progress", { class: "tray-progress", max: "1", value: "0", hidden: true, "aria-label": "Upload progress" });
    this.tray.replaceChildren(el("div", { class: `tray-item tray-${kind}` }, attachmentView(local, { local: true }), caption, progress, remove));
    this.tray.hidden = false;
    this.#updateSend();
    this.input.focus();
  }

  progress(fraction) {
    const bar = this.tray.querySelector(".tray-progress");
    if (!bar) return;
    bar.hidden = false;
    bar.value = fraction;
  }

  clearFile() {
    if (this.file) URL.revokeObjectURL(this.file.url);
    this.file = null;
    this.tray.replaceChildren();
    this.tray.hidden = true;
    this.#updateSend();
  }

  #setupDrop(zone) {
    let depth = 0;
    const has = (event) => Array.from(event.dataTransfer?.types || []).includes("Files");
    zone.addEventListener("dragenter", (event) => {
      if (!has(event)) return;
      depth += 1;
      zone.classList.add("dragging");
    });
    zone.addEventListener("dragover", (event) => {
      if (has(event)) event.preventDefault();
    });
    zone.addEventListener("dragleave", () => {
      depth = Math.max(0, depth - 1);
      if (!depth) zone.classList.remove("dragging");
    });
    zone.addEventListener("drop", (event) => {
      if (!has(event)) return;
      event.preventDefault();
      depth = 0;
      zone.classList.remove("dragging");
      const file = event.dataTransfer.files[0];
      if (file) this.setFile(file);
    });
  }

  // --- Voice messages

  #setupRecorder() {
    const box = this.recorderBox;
    const fill = box.querySelector(".meter-fill");
    const meter = box.querySelector(".meter");
    const time = box.querySelector(".rec-time");
    const recorder = new Recorder({
      onLevel: (level) => {
        fill.style.transform = `scaleX(${level.toFixed(3)})`;
        meter.setAttribute("aria-valuenow", String(Math.round(level * 100)));
      },
      onTick: (seconds) => (time.textContent = formatDuration(seconds)),
    });
    this.recorder = recorder;
    const row = this.form.querySelector(".composer-row");
    const finish = async (keep) => {
      box.hidden = true;
      row.hidden = false;
      if (!keep) return recorder.cancel();
      const result = await recorder.stop();
      if (result) this.setFile(result.file, { duration: result.duration, waveform: result.waveform });
    };
    this.record.addEventListener("click", async () => {
      try {
        time.textContent = "0:00";
        box.hidden = false;
        row.hidden = true;
        await recorder.start();
        box.querySelector(".rec-done").focus();
      } catch (error) {
        box.hidden = true;
        row.hidden = false;
        this.flash(error && error.name === "NotAllowedError" ? "Parley may not use the microphone: allow it in the browser to record." : "Could not start recording.");
      }
    });
    box.querySelector(".rec-cancel").addEventListener("click", () => finish(false));
    box.querySelector(".rec-done").addEventListener("click", () => finish(true));
    box.addEventListener("keydown", (event) => {
      if (event.key === "Escape") finish(false);
    });
  }
}
