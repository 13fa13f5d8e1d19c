// Attachments in messages: an image (opens in the viewer), a voice message or audio
// file (a player drawing the waveform the server computed), a video, a file.

import { el, formatBytes, formatDuration } from "./util.js";

const BARS = 48;

export function attachmentView(attachment, { local = false } = {}) {
  if (!attachment) return null;
  switch (attachment.kind) {
    case "image":
      return imageView(attachment);
    case "audio":
      return audioView(attachment);
    case "video":
      return el("video", {
        class: "attachment attachment-video",
        src: attachment.url,
        controls: true,
        preload: "metadata",
        playsinline: true,
        width: attachment.width || null,
        height: attachment.height || null,
      });
    default:
      return fileView(attachment, local);
  }
}

function imageView(attachment) {
  const img = el("img", {
    src: attachment.url,
    alt: attachment.name ? `Image: ${attachment.name}` : "Image",
    loading: "lazy",
    width: attachment.width || null,
    height: attachment.height || null,
  });
  return el(
    "button",
    {
      type: "button",
      class: "attachment attachment-image",
      "aria-label": "Open the image",
      onclick: () => openViewer(attachment.url, img.alt),
    },
    img,
  );
}

export function openViewer(url, alt = "") {
  const dialog = document.querySelector("dialog.viewer");
  if (!dialog) return;
  const image = dialog.querySelector(".viewer-image");
  image.src = url;
  image.alt = alt;
  dialog.showModal();
}

export function setupViewer() {
  const dialog = document.querySelector("dialog.viewer");
  if (!dialog) return;
  // A click on the backdrop (the dialog itself, outside the picture) closes it.
  dialog.addEventListener("click", (event) => {
    if (event.target === dialog) dialog.close();
  });
  dialog.addEventListener("close", () => {
    dialog.querySelector(".viewer-image").removeAttribute("src");
  });
}

function normalise(waveform) {
  const peaks = Array.isArray(waveform) && waveform.length ? waveform : new Array(BARS).fill(0.15);
  const max = Math.max(...peaks.map((v) => Math.abs(Number(v) || 0)), 0.0001);
  // Resample to BARS values so every player has the same width.
  return Array.from({ length: BARS }, (_, i) => {
    const v = Math.abs(Number(peaks[Math.floor((i * peaks.length) / BARS)]) || 0) / max;
    return Math.max(0.08, Math.min(1, v));
  });
}

function audioView(attachment) {
  const audio = el("audio", { src: attachment.url, preload: "metadata" });
  const play = el("button", { type: "button", class: "play", "aria-label": "Play the voice message" });
  const bars = normalise(attachment.waveform).map((v) => {
    const bar = el("span", { class: "bar" });
    bar.style.height = `${Math.round(v * 100)}%`; // CSSOM: allowed by the CSP
    return bar;
  });
  const wave = el("span", { class: "wave", role: "slider", tabindex: "0", "aria-label": "Position", "aria-valuemin": "0", "aria-valuemax": "100", "aria-valuenow": "0" }, bars);
  const time = el("span", { class: "audio-time", text: formatDuration(attachment.duration_s || 0) });
  const view = el("div", { class: "attachment attachment-audio" }, play, wave, time, audio);

  const paint = () => {
    const duration = audio.duration || attachment.duration_s || 0;
    const fraction = duration ? audio.currentTime / duration : 0;
    const played = Math.round(fraction * BARS);
    bars.forEach((bar, i) => bar.classList.toggle("played", i < played));
    wave.setAttribute("aria-valuenow", String(Math.round(fraction * 100)));
    time.textContent = formatDuration(audio.paused && !audio.currentTime ? duration : audio.currentTime);
  };
  play.addEventListener("click", () => {
    if (audio.paused) {
      document.querySelectorAll(".attachment-audio audio").forEach((other) => other !== audio && other.pause());
      audio.play().catch(() => {});
    } else {
      audio.pause();
    }
  });
  const seek = (fraction) => {
    const duration = audio.duration || attachment.duration_s || 0;
    if (duration) audio.currentTime = Math.max(0, Math.min(1, fraction)) * duration;
    paint();
  };
  wave.addEventListener("click", (event) => {
    const box = wave.getBoundingClientRect();
    seek((event.clientX - box.left) / box.width);
  });
  wave.addEventListener("keydown", (event) => {
    const duration = audio.duration || attachment.duration_s || 0;
    if (!duration) return;
    if (event.key === "ArrowRight") seek((audio.currentTime + 5) / duration);
    else if (event.key === "ArrowLeft") seek((audio.currentTime - 5) / duration);
    else return;
    event.preventDefault();
  });
  audio.addEventListener("play", () => {
    view.classList.add("playing");
    play.setAttribute("aria-label", "Pause");
  });
  audio.addEventListener("pause", () => {
    view.classList.remove("playing");
    play.setAttribute("aria-label", "Play the voice message");
  });
  audio.addEventListener("timeupdate", paint);
  audio.addEventListener("loadedmetadata", paint);
  audio.addEventListener("ended", () => {
    audio.currentTime = 0;
    paint();
  });
  return view;
}

function fileView(attachment, local) {
  const name = attachment.name || decodeURIComponent((attachment.url || "").split("/").filter(Boolean).pop() || "file");
  const meta = [attachment.content_type, formatBytes(attachment.size)].filter(Boolean).join(" · ");
  return el(
    local ? "span" : "a",
    { class: "attachment attachment-file", href: local ? null : attachment.url, download: local ? null : name },
    el("span", { class: "file-icon", "aria-hidden": "true", text: "📎" }),
    el("span", { class: "file-text" }, el("span", { class: "file-name", text: name }), el("span", { class: "file-meta", text: meta })),
  );
}
