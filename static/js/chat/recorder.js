// Voice messages recorded in the page: MediaRecorder for the sound, a Web Audio
// AnalyserNode for the live level meter, and the peaks kept for a local waveform.

export const MAX_SECONDS = 300;

function pickType() {
  const types = ["audio/webm;codecs=opus", "audio/ogg;codecs=opus", "audio/mp4", "audio/webm"];
  return types.find((t) => window.MediaRecorder && MediaRecorder.isTypeSupported(t)) || "";
}

export function recordingSupported() {
  return Boolean(navigator.mediaDevices && navigator.mediaDevices.getUserMedia && window.MediaRecorder);
}

export class Recorder {
  // onLevel(0..1) about 30 times a second; onTick(seconds) every second.
  constructor({ onLevel, onTick }) {
    this.onLevel = onLevel;
    this.onTick = onTick;
    this.stream = null;
    this.recorder = null;
    this.chunks = [];
    this.peaks = [];
    this.context = null;
    this.frame = 0;
    this.ticker = 0;
    this.startedAt = 0;
  }

  async start() {
    this.stream = await navigator.mediaDevices.getUserMedia({ audio: true });
    const type = pickType();
    this.recorder = new MediaRecorder(this.stream, type ? { mimeType: type } : undefined);
    this.chunks = [];
    this.peaks = [];
    this.recorder.addEventListener("dataavailable", (event) => {
      if (event.data && event.data.size) this.chunks.push(event.data);
    });
    this.recorder.start(250);
    this.startedAt = performance.now();

    const AudioContext = window.AudioContext || window.webkitAudioContext;
    this.context = new AudioContext();
    const source = this.context.createMediaStreamSource(this.stream);
    const analyser = this.context.createAnalyser();
    analyser.fftSize = 1024;
    source.connect(analyser);
    const samples = new Float32Array(analyser.fftSize);
    const draw = () => {
      analyser.getFloatTimeDomainData(samples);
      let sum = 0;
      for (const s of samples) sum += s * s;
      const rms = Math.sqrt(sum / samples.length);
      // Speech sits around 0.02-0.3 RMS: a square root spreads it over the meter.
      const level = Math.min(1, Math.sqrt(rms * 4));
      this.peaks.push(level);
      this.onLevel(level);
      this.frame = requestAnimationFrame(draw);
    };
    draw();
    this.ticker = setInterval(() => {
      const seconds = this.elapsed();
      this.onTick(seconds);
      if (seconds >= MAX_SECONDS) this.stop();
    }, 1000);
  }

  elapsed() {
    return (performance.now() - this.startedAt) / 1000;
  }

  // The recording as a File (null when cancelled or empty), with its duration and a
  // 64-value waveform for the preview.
  async stop() {
    if (!this.recorder) return null;
    const recorder = this.recorder;
    const duration = this.elapsed();
    const done = new Promise((resolve) => recorder.addEventListener("stop", resolve, { once: true }));
    if (recorder.state !== "inactive") recorder.stop();
    await done;
    this.#release();
    if (!this.chunks.length) return null;
    const type = recorder.mimeType || "audio/webm";
    const extension = type.includes("ogg") ? "ogg" : type.includes("mp4") ? "m4a" : "webm";
    const blob = new Blob(this.chunks, { type });
    const file = new File([blob], `voice-message.${extension}`, { type });
    return { file, duration, waveform: this.#waveform(64) };
  }

  cancel() {
    if (this.recorder && this.recorder.state !== "inactive") this.recorder.stop();
    this.chunks = [];
    this.#release();
  }

  #waveform(count) {
    if (!this.peaks.length) return [];
    const size = this.peaks.length / count;
    return Array.from({ length: count }, (_, i) => {
      const part = this.peaks.slice(Math.floor(i * size), Math.max(Math.floor((i + 1) * size), Math.floor(i * size) + 1));
      return Math.max(...part, 0);
    });
  }

  #release() {
    cancelAnimationFrame(this.frame);
    clearInterval(this.ticker);
    if (this.stream) this.stream.getTracks().forEach((t) => t.stop());
    if (this.context) this.context.close().catch(() => {});
    this.stream = null;
    this.context = null;
    this.recorder = null;
    this.onLevel(0);
  }
}
