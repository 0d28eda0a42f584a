// The evidence player: an alert's full-frame recording with its overlay track drawn over it (the same drawing as
// live, draw.js), opened at the first frame judged fake, with the fused score of the alert's face as a timeline
// under the video (click it to seek). The overlay track's times are the recording's own clock, so an entry is
// matched to the frame on screen by the video's currentTime alone.

import { withToken } from "./api.js";
import { COLOURS, contentRect, drawOverlay } from "./draw.js";

const ENTRY_MAX_AGE_S = 1.0; // an analysed frame's boxes stay drawn this long (analysis runs at a few fps)
const TIMELINE_HEIGHT = 64;

export function evidenceFileUrl(id, name) {
  return withToken(`/evidence/${encodeURIComponent(id)}/${encodeURIComponent(name)}`);
}

/** The overlay entry for clip time `t`: the latest at or before it, unless older than ENTRY_MAX_AGE_S. */
export function entryAt(frames, t) {
  let lo = 0;
  let hi = frames.length - 1;
  let found = -1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    if (frames[mid].t <= t + 1e-3) { found = mid; lo = mid + 1; } else hi = mid - 1;
  }
  if (found < 0 || t - frames[found].t > ENTRY_MAX_AGE_S) return null;
  return frames[found];
}

/** The alert's face in an entry (its track), else the highest-scored face. */
function alertFace(entry, track) {
  const faces = (entry && entry.faces) || [];
  return faces.find((f) => f.track === track) || faces.reduce((a, f) => (a && a.score >= f.score ? a : f), null);
}

export class EvidencePlayer {
  /** `dialog` is an empty <dialog>; the player builds its contents. */
  constructor(dialog) {
    this.dialog = dialog;
    this.state = { status: "closed", alert: null, seekedTo: null, overlayInk: 0, drawnAt: null, error: null, frames: 0 };
    dialog.innerHTML = `
      <div class="player-head"><strong class="player-title"></strong>
        <a class="player-manifest" target="_blank" rel="noopener">manifest</a>
        <button type="button" class="player-close" aria-label="close">✕</button></div>
      <div class="stage player-stage"><video class="player-video" controls muted playsinline preload="auto"></video>
        <canvas class="player-overlay"></canvas></div>
      <canvas class="player-timeline" height="${TIMELINE_HEIGHT}" aria-label="fused p(fake) over the recording"></canvas>
      <p class="player-status" role="status"></p>`;
    this.video = dialog.querySelector(".player-video");
    this.overlay = dialog.querySelector(".player-overlay");
    this.timeline = dialog.querySelector(".player-timeline");
    this.statusLine = dialog.querySelector(".player-status");
    dialog.querySelector(".player-close").addEventListener("click", () => this.close());
    dialog.addEventListener("close", () => this._stop());
    this.timeline.addEventListener("click", (e) => {
      if (!this.track) return;
      const r = this.timeline.getBoundingClientRect();
      this.video.currentTime = ((e.clientX - r.left) / r.width) * this._duration();
    });
    this.video.addEventListener("error", () => this._fail(`the browser cannot play this recording (${this._mediaError()})`));
    this._tick = this._tick.bind(this);
  }

  async open(alert) {
    this._stop();
    this.state = { ...this.state, status: "loading", alert: alert.id, seekedTo: null, overlayInk: 0, error: null };
    this.dialog.querySelector(".player-title").textContent = `${alert.stream} · track #${alert.track}`;
    this.dialog.querySelector(".player-manifest").href = evidenceFileUrl(alert.id, "manifest.json");
    this.statusLine.textContent = "Loading the recording…";
    if (this.dialog.showModal) this.dialog.showModal(); else this.dialog.setAttribute("open", "");
    try {
      const resp = await fetch(evidenceFileUrl(alert.id, "overlay.json"));
      if (!resp.ok) throw new Error(`overlay track: HTTP ${resp.status}`);
      this.track = await resp.json();
    } catch (err) {
      this._fail(String(err.message || err));
      return;
    }
    this.state.frames = this.track.frames.length;
    this.video.src = evidenceFileUrl(alert.id, "recording.mp4");
    await new Promise((resolve) => this.video.addEventListener("loadedmetadata", resolve, { once: true }));
    this.video.currentTime = this.track.first_fake || 0;
    await new Promise((resolve) => this.video.addEventListener("seeked", resolve, { once: true }));
    this.state.seekedTo = this.video.currentTime;
    this.state.status = "ready";
    const t = (this.track.first_fake || 0).toFixed(1);
    this.statusLine.textContent = `Opened at ${t} s, the first frame judged fake; ${this.track.frames.length} analysed frames.`;
    this._running = true;
    this._tick();
  }

  close() {
    if (this.dialog.open) this.dialog.close();
    this._stop();
  }

  _stop() {
    this._running = false;
    this.video.pause();
    this.state.status = "closed";
  }

  _fail(text) {
    this.state.status = "error";
    this.state.error = text;
    this.statusLine.textContent = text;
  }

  _mediaError() {
    const e = this.video.error;
    return e ? `code ${e.code}${e.message ? `: ${e.message}` : ""}` : "unknown error";
  }

  _duration() {
    return (Number.isFinite(this.video.duration) && this.video.duration) || this.track.duration || 1;
  }

  _tick() {
    if (!this._running) return;
    this._draw();
    if (this.video.requestVideoFrameCallback) this.video.requestVideoFrameCallback(this._tick);
    else requestAnimationFrame(this._tick);
    if (this.video.paused) setTimeout(() => this._running && this._draw(), 100); // seeking while paused
  }

  _draw() {
    const t = this.video.currentTime;
    const cw = this.overlay.clientWidth;
    const ch = this.overlay.clientHeight;
    if (this.overlay.width !== cw || this.overlay.height !== ch) { this.overlay.width = cw; this.overlay.height = ch; }
    const entry = entryAt(this.track.frames, t);
    const rect = contentRect(this.track.width, this.track.height, cw, ch);
    const ctx = this.overlay.getContext("2d");
    const drawn = entry ? drawOverlay(ctx, { faces: entry.faces, frame_size: [this.track.width, this.track.height] }, rect, cw, ch) : [];
    if (!entry) ctx.clearRect(0, 0, cw, ch);
    this.state.overlayInk = drawn.length;
    this.state.drawnAt = entry ? entry.t : null;
    this._drawTimeline(t);
  }

  _drawTimeline(now) {
    const c = this.timeline;
    const w = c.clientWidth || 600;
    if (c.width !== w) c.width = w;
    const h = c.height;
    const ctx = c.getContext("2d");
    const d = this._duration();
    const x = (t) => (t / d) * w;
    const y = (p) => h - 4 - p * (h - 8);
    ctx.fillStyle = "#1a1f2b";
    ctx.fillRect(0, 0, w, h);
    ctx.strokeStyle = "#2c3342";
    ctx.beginPath(); ctx.moveTo(0, y(0.5)); ctx.lineTo(w, y(0.5)); ctx.stroke();
    ctx.lineWidth = 2;
    let prev = null;
    for (const entry of this.track.frames) {
      const face = alertFace(entry, this.track.track);
      if (!face || face.score === null || face.score === undefined) { prev = null; continue; }
      const p = [x(entry.t), y(face.score)];
      if (prev) {
        ctx.strokeStyle = COLOURS[face.verdict] || COLOURS.none;
        ctx.beginPath(); ctx.moveTo(prev[0], prev[1]); ctx.lineTo(p[0], p[1]); ctx.stroke();
      }
      prev = p;
    }
    ctx.lineWidth = 1;
    ctx.strokeStyle = COLOURS.fake;
    ctx.beginPath(); ctx.moveTo(x(this.track.first_fake || 0), 0); ctx.lineTo(x(this.track.first_fake || 0), h); ctx.stroke();
    ctx.strokeStyle = "#f3f4f7";
    ctx.beginPath(); ctx.moveTo(x(now), 0); ctx.lineTo(x(now), h); ctx.stroke();
    ctx.fillStyle = "#8a94a6";
    ctx.font = "11px system-ui, sans-serif";
    ctx.fillText("fused p(fake)", 4, 12);
  }
}
